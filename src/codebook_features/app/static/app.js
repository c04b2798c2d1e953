// The browser's only script: sortable tables, saving codes to a concept, editing and deleting
// a concept, the steering playground, and the codes of a document's tokens. Server text is
// always inserted as text, never HTML.
"use strict";

// Integers past 2**53 (a sample's 63-bit seed) keep their exact digits, as text, where the
// browser gives a reviver the number's source.
function parseJSON(text) {
  try {
    return JSON.parse(text, (key, value, context) =>
      typeof value === "number" && !Number.isSafeInteger(value) && /^-?\d+$/.test(context?.source ?? "")
        ? context.source : value);
  } catch {
    return {};
  }
}

async function api(method, url, body) {
  const response = await fetch(url, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = parseJSON(await response.text().catch(() => ""));
  if (!response.ok) {
    const detail = typeof data.detail === "string" ? data.detail
      : Array.isArray(data.detail) ? data.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ")
      : `HTTP ${response.status}`;
    throw new Error(detail);
  }
  return data;
}

function say(output, text, bad) {
  output.textContent = text;
  output.classList.toggle("bad", Boolean(bad));
}

function lines(text) {
  return text.split(/\r?\n/).map((s) => s.trim()).filter(Boolean);
}

function cellValue(row, index, numeric) {
  const cell = row.cells[index];
  const raw = cell.dataset.value ?? cell.textContent.trim();
  return numeric ? parseFloat(raw.replace(/[,%]/g, "")) || 0 : raw.toLowerCase();
}

function makeSortable(table) {
  const heads = Array.from(table.tHead.rows[0].cells);
  heads.forEach((th, index) => {
    th.addEventListener("click", () => {
      const numeric = th.dataset.type === "num";
      const descending = th.getAttribute("aria-sort") !== "descending";
      heads.forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const x = cellValue(a, index, numeric), y = cellValue(b, index, numeric);
        return (x < y ? -1 : x > y ? 1 : 0) * (descending ? -1 : 1);
      });
      rows.forEach((row) => body.appendChild(row));
    });
  });
}

function saveConcept(form) {
  const output = document.getElementById("save-status");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = form.elements.name.value.trim();
    try {
      const body = { codes: [form.dataset.code], mode: form.elements.mode.value };
      const concept = await api("POST", `/api/concepts/${encodeURIComponent(name)}/codes`, body);
      output.textContent = "";
      const link = document.createElement("a");
      link.href = concept.url;
      link.textContent = concept.name;
      output.append("saved to ", link, ` (${concept.codes.length} codes)`);
      output.classList.remove("bad");
    } catch (error) {
      say(output, error.message, true);
    }
  });
}

function editConcept(form) {
  const output = document.getElementById("concept-status");
  const name = form.dataset.name;
  const url = `/api/concepts/${encodeURIComponent(name)}`;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const concept = await api("PATCH", url, {
        description: form.elements.description.value,
        codes: lines(form.elements.codes.value),
        mode: form.elements.mode.value,
        positions: form.elements.positions.value,
      });
      say(output, `saved (${concept.codes.length} codes)`);
    } catch (error) {
      say(output, error.message, true);
    }
  });
  document.getElementById("concept-delete").addEventListener("click", async () => {
    if (!window.confirm(`Delete the concept ${name}?`)) return;
    try {
      await api("DELETE", url);
      window.location.assign("/concepts");
    } catch (error) {
      say(output, error.message, true);
    }
  });
}

function steer(form) {
  const output = document.getElementById("steer-status");
  const section = document.getElementById("steer-output");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = form.elements;
    const body = {
      prompt: f.prompt.value,
      codes: lines(f.codes.value),
      generation: {
        max_new_tokens: parseInt(f.max_new_tokens.value, 10),
        temperature: parseFloat(f.temperature.value),
        top_k: parseInt(f.top_k.value, 10),
        top_p: parseFloat(f.top_p.value),
        samples: parseInt(f.samples.value, 10),
        seed: parseInt(f.seed.value, 10),
      },
    };
    for (const key of ["concept", "mode", "positions"]) {
      if (f[key].value) body[key] = f[key].value;
    }
    if (f.top.value) body.top = parseInt(f.top.value, 10);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    say(output, "generating…");
    try {
      const result = await api("POST", "/api/steer", body);
      const rows = section.querySelector("tbody");
      rows.replaceChildren();
      for (const sample of result.samples) {
        const row = rows.insertRow();
        for (const text of [String(sample.seed), sample.unsteered, sample.steered]) {
          row.insertCell().textContent = text;
        }
      }
      document.getElementById("steer-what").textContent = `steering: ${result.steering.join("; ")}`;
      section.hidden = false;
      say(output, `done in ${result.seconds.toFixed(1)} s` + (result.stopped_early ? " (stopped by the time limit)" : ""));
    } catch (error) {
      say(output, error.message, true);
    } finally {
      button.disabled = false;
    }
  });
}

function codeLink(site, group, id) {
  const link = document.createElement("a");
  link.className = "code";
  link.href = `/codes/${site.split("/").map(encodeURIComponent).join("/")}/${group}/${id}`;
  link.textContent = String(id);
  link.title = `${site}/${group}/${id}`;
  return link;
}

function documentTokens(view) {
  const panel = document.getElementById("token-codes");
  let current = null;
  async function show(token) {
    if (current) current.classList.remove("selected");
    current = token;
    token.classList.add("selected");
    const position = token.dataset.p;
    try {
      const data = await api("GET", `/api/documents/${view.dataset.document}/tokens/${position}`);
      if (current !== token) return; // another token was chosen meanwhile
      const title = document.createElement("p");
      const text = document.createElement("span");
      text.className = "tok";
      text.textContent = data.text;
      title.append(`token ${data.position} `, text, ` (id ${data.token})`);
      panel.replaceChildren(title);
      for (const [site, groups] of Object.entries(data.codes)) {
        const heading = document.createElement("h3");
        heading.textContent = site;
        panel.append(heading);
        groups.forEach((ids, group) => {
          const line = document.createElement("span");
          line.className = "group";
          line.append(`${group}:`);
          for (const id of ids) if (id >= 0) line.append(" ", codeLink(site, group, id));
          panel.append(line);
        });
      }
    } catch (error) {
      const message = document.createElement("p");
      message.className = "error";
      message.textContent = error.message;
      panel.replaceChildren(message);
    }
  }
  view.addEventListener("click", (event) => {
    const token = event.target.closest(".t");
    if (token) show(token);
  });
  view.addEventListener("keydown", (event) => {
    const token = event.target.closest(".t");
    if (token && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      show(token);
    }
  });
  const from = view.querySelector(".t.from");
  if (from) {
    const box = from.getBoundingClientRect();
    if (box.top < 0 || box.bottom > window.innerHeight) from.scrollIntoView({ block: "center" });
    show(from);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.sortable").forEach(makeSortable);
  const save = document.getElementById("save-concept");
  if (save) saveConcept(save);
  const edit = document.getElementById("concept-edit");
  if (edit) editConcept(edit);
  const playground = document.getElementById("steer-form");
  if (playground) steer(playground);
  const view = document.getElementById("document");
  if (view) documentTokens(view);
});
