// The drop-in build: styles inlined, the header mounted on every <header data-the-header>.
import { mountHeader, styles } from "./index.js";

function inject() {
  if (!document.getElementById("the-header-styles")) {
    const style = document.createElement("style");
    style.id = "the-header-styles";
    style.textContent = styles;
    document.head.appendChild(style);
  }
  for (const element of document.querySelectorAll("header[data-the-header]")) {
    mountHeader(element, { title: element.dataset.title, current: location.pathname });
  }
}

if (typeof document !== "undefined") {
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", inject);
  else inject();
}

export { mountHeader };
