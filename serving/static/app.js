// Sends the chosen photos to /predict (one) or /compare (2-10) and shows scores and ranking.
const $ = (id) => document.getElementById(id);
$("key").value = localStorage.getItem("popularity-key") || "";

function headers() {
  const key = $("key").value.trim();
  localStorage.setItem("popularity-key", key);
  return key ? { "X-API-Key": key } : {};
}

function show(rows, model) {
  const body = $("results").querySelector("tbody");
  body.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    if (row.rank === 1 && rows.length > 1) tr.className = "best";
    const img = document.createElement("img");
    img.src = URL.createObjectURL(row.file);
    img.alt = row.file.name;
    const cells = [String(row.rank), img, row.file.name, row.score.toFixed(3), row.label ? "popular" : "not popular"];
    for (const value of cells) {
      const td = document.createElement("td");
      td.append(value);
      tr.append(td);
    }
    body.append(tr);
  }
  $("results").hidden = false;
  $("model").textContent = `Answered by ${model.model} version ${model.version}`;
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const files = [...$("files").files];
  $("status").className = "";
  if (files.length < 1 || files.length > 10) {
    $("status").className = "error";
    $("status").textContent = "Choose between 1 and 10 photos.";
    return;
  }
  $("status").textContent = "Scoring…";
  const form = new FormData();
  const single = files.length === 1;
  for (const f of files) form.append(single ? "image" : "images", f);
  try {
    const response = await fetch(single ? "/predict" : "/compare", { method: "POST", body: form, headers: headers() });
    const data = await response.json();
    if (!response.ok) {
      const detail = (data.images || []).map((e) => `${files[e.index].name}: ${e.message}`).join("; ");
      throw new Error(`${data.message || data.error || response.statusText}${detail ? " (" + detail + ")" : ""}`);
    }
    const rows = single
      ? [{ rank: 1, file: files[0], score: data.score, label: data.label }]
      : data.ranking.map((r) => ({ rank: r.rank, file: files[r.index], score: r.score, label: r.label }));
    show(rows, data);
    $("status").textContent = single ? "Scored." : `Best: ${files[data.best].name}`;
  } catch (error) {
    $("status").className = "error";
    $("status").textContent = `Error: ${error.message}`;
  }
});

// While /readyz answers 503 (no champion yet, or one that failed to load) the page says why and waits:
// the service becomes ready by itself, and the page notices within 10 s.
async function checkReady() {
  let ready = false, reason = "the service does not answer";
  try {
    const response = await fetch("/readyz", { cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    ready = response.ok;
    reason = body.message || body.reason || `HTTP ${response.status}`;
  } catch (error) { /* the service is down or restarting */ }
  $("notready").hidden = ready;
  $("go").disabled = !ready;
  if (!ready) $("notready").textContent = `Not ready to score yet: ${reason}. This page checks again every 10 s.`;
}
checkReady();
setInterval(checkReady, 10000);
