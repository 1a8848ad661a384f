console.log(`node ${process.env.NODE_ENV} as ${process.getuid()}: ${require("left-pad")("x", 3, "-")}`);
