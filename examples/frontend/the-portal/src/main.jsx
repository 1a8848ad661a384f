import { h, Fragment, render } from "preact";
import { useState } from "preact/hooks";

const APPS = [
  { name: "RAM", href: "/ram/", about: "resources, assets and machines" },
  { name: "Portal", href: "/portal/", about: "this page" },
];

function Portal() {
  const [filter, setFilter] = useState("");
  const shown = APPS.filter((app) => app.name.toLowerCase().includes(filter.toLowerCase()));
  return (
    <>
      <h1>Portal</h1>
      <input placeholder="Filter apps" value={filter} onInput={(e) => setFilter(e.target.value)} />
      <ul>
        {shown.map((app) => (
          <li key={app.href}>
            <a href={app.href}>{app.name}</a>: {app.about}
          </li>
        ))}
      </ul>
    </>
  );
}

render(<Portal />, document.getElementById("portal"));
