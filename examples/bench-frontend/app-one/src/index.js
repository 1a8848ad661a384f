import { greet } from "./greet.js";

const root = document.getElementById("root");
root.textContent = greet("polyarch");
