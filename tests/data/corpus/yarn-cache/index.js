console.log("yarn" + require("left-pad")("ok", 4, "."));
