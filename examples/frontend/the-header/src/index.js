import styles from "./header.css";

export { styles };

/** Links shown in the header of every app. */
export const LINKS = [
  { href: "/ram/", label: "RAM" },
  { href: "/portal/", label: "Portal" },
];

/** Render the header into `element`; `current` is the path of the app showing it. */
export function mountHeader(element, { title = "dx-arch-ui", current = "" } = {}) {
  const nav = LINKS.map(
    (link) =>
      `<a href="${link.href}"${link.href === current ? ' aria-current="page"' : ""}>${link.label}</a>`,
  ).join("");
  element.classList.add("the-header");
  element.innerHTML = `<span class="the-header-title">${title}</span>${nav}`;
  return element;
}
