import { h, Fragment, render } from "preact";
import { useMemo, useState } from "preact/hooks";

const MACHINES = [
  { name: "build-01", arch: "amd64", memory: 24 },
  { name: "build-02", arch: "arm64", memory: 16 },
  { name: "edge-01", arch: "arm64", memory: 4 },
];

function Ram() {
  const [arch, setArch] = useState("all");
  const shown = useMemo(
    () => MACHINES.filter((m) => arch === "all" || m.arch === arch),
    [arch],
  );
  const total = shown.reduce((sum, m) => sum + m.memory, 0);
  return (
    <>
      <h1>RAM</h1>
      <select value={arch} onChange={(e) => setArch(e.target.value)}>
        <option value="all">every architecture</option>
        <option value="amd64">amd64</option>
        <option value="arm64">arm64</option>
      </select>
      <table>
        <tbody>
          {shown.map((m) => (
            <tr key={m.name}>
              <td>{m.name}</td>
              <td>{m.arch}</td>
              <td>{m.memory} GiB</td>
            </tr>
          ))}
        </tbody>
      </table>
      <p>{total} GiB in all</p>
    </>
  );
}

render(<Ram />, document.getElementById("ram"));
