// Measures a gradlint verify report as Chromium lays it out, and writes what it found into the page as JSON
// (a pre element, id gradlint-probe), which `--dump-dom` hands back to tests/chromium.py. Boxes, not pixels.
(() => {
 const pre = document.createElement("pre");
 pre.id = "gradlint-probe";
 try {
  const viewport = document.documentElement.clientWidth;
  const inside = (r, box, tol = 1) =>
    r.left >= box.left - tol && r.right <= box.right + tol && r.top >= box.top - tol && r.bottom <= box.bottom + tol;
  const overlap = (a, b) =>
    a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5;
  const text = (el) => (el ? el.textContent.trim() : null);
  // An SVG text without its hover title (a `<title>` child).
  const own = (t) => [...t.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent).join("").trim();
  // Inside an element that scrolls (a <pre>), what runs past its edge is reachable, not cut.
  const scrolls = (el) => {
    for (let e = el.parentElement; e && e !== document.body; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.overflowX === "auto" || s.overflowX === "scroll") return true;
    }
    return false;
  };
  const out = { viewport, scrollWidth: document.documentElement.scrollWidth, charts: [], origins: [],
                backticks: [], past_the_edge: [], header: text(document.querySelector(".meta")),
                command: text(document.querySelector("pre.cmd")), banner: text(document.querySelector(".banner")),
                sections: [...document.querySelectorAll("h2")].map(text) };

  for (const fig of document.querySelectorAll("figure.chart")) {
    const svg = fig.querySelector(":scope > svg");
    const chart = { key: fig.dataset.chart, title: text(fig.querySelector("figcaption")), svg: !!svg,
                    empty: text(fig.querySelector(".empty")),
                    legend: [...fig.querySelectorAll(".legend .item")].map(text),
                    hover: [], lines: 0, x_label: null, y_label: null, y_ticks: [], x_ticks: [],
                    cut: [], overlaps: [], skipped_marks: 0, nonfinite_marks: 0 };
    if (svg) {
      const box = svg.getBoundingClientRect();
      chart.x_label = text(svg.querySelector("text.axis-label.x"));
      chart.y_label = text(svg.querySelector("text.axis-label.y"));
      chart.lines = svg.querySelectorAll("polyline").length;
      chart.hover = [...new Set([...svg.querySelectorAll("polyline > title, circle > title")].map(text).filter((t) => !/skipped/.test(t)))];
      chart.skipped_marks = [...svg.querySelectorAll("circle > title")].filter((t) => /skipped/.test(t.textContent)).length;
      chart.nonfinite_marks = svg.querySelectorAll("text.mark").length;
      const texts = [...svg.querySelectorAll("text")];
      for (const t of texts) {
        if (!inside(t.getBoundingClientRect(), box)) chart.cut.push(t.textContent);
      }
      const labels = texts.filter((t) => t.classList.contains("tick") || t.classList.contains("axis-label"));
      const rects = labels.map((t) => t.getBoundingClientRect());
      for (let i = 0; i < labels.length; i++) {
        for (let j = i + 1; j < labels.length; j++) {
          if (overlap(rects[i], rects[j])) chart.overlaps.push([labels[i].textContent, labels[j].textContent]);
        }
      }
      const ticks = texts.filter((t) => t.classList.contains("tick"));
      chart.y_ticks = ticks.filter((t) => t.getAttribute("text-anchor") === "end").map(own);
      chart.x_ticks = ticks.filter((t) => t.getAttribute("text-anchor") === "middle").map(own);
      const r = box;
      if (r.right > viewport + 1 || r.left < -1) chart.cut.push(`the chart itself (${r.left}..${r.right})`);
    }
    for (const item of fig.querySelectorAll(".legend .item")) {
      const r = item.getBoundingClientRect();
      if (r.right > viewport + 1 || r.left < -1) chart.cut.push(`legend: ${text(item)}`);
    }
    out.charts.push(chart);
  }

  for (const box of document.querySelectorAll(".origin")) {
    out.origins.push({
      run: box.dataset.run, title: text(box.querySelector("h3")),
      context: [...box.querySelectorAll("pre.context code > *, pre.context code")].length ? text(box.querySelector("pre.context")) : null,
      here: text(box.querySelector("pre.context .here")),
      chain: [...box.querySelectorAll("ol.chain > li")].map(text),
      tensors: [...box.querySelectorAll("table.tensors tr")].slice(1).map((tr) => [...tr.children].map(text)),
      rules: [...box.querySelectorAll("ul > li")].map(text),
      text: text(box),
    });
  }

  // Backticks meant as code must render as code: none left in the prose.
  for (const el of document.querySelectorAll(".banner, table.checks td, .origin h3, .origin > div, .origin li")) {
    const copy = el.cloneNode(true);
    copy.querySelectorAll("code, pre").forEach((c) => c.remove());
    if (copy.textContent.includes("`")) out.backticks.push(copy.textContent.trim().slice(0, 200));
  }

  // Anything laid out past the right edge of the window, outside a scrolling box, is cut for the reader.
  for (const el of document.body.querySelectorAll("*")) {
    if (el.closest("svg") && el.tagName.toLowerCase() !== "svg") continue;
    const r = el.getBoundingClientRect();
    if (r.width && (r.right > viewport + 1 || r.left < -1) && !scrolls(el)) {
      out.past_the_edge.push(`${el.tagName.toLowerCase()}.${el.className && el.className.baseVal !== undefined ? el.className.baseVal : el.className}: ${text(el).slice(0, 60)}`);
    }
  }

  pre.textContent = JSON.stringify(out);
 } catch (error) {
  pre.textContent = JSON.stringify({ error: `${error} ${error.stack}` });
 }
 document.body.appendChild(pre);
})();
