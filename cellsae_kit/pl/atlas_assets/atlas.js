/* The feature atlas written by cellsae_kit.pl.atlas: an index of features and one view per feature (#feature=N).

   Plain JavaScript, no server, no network. The data are scripts, because browsers refuse fetch() of local files:
   data/index.js sets window.ATLAS_INDEX (the fields the index searches, sorts and filters by), and features/N.js
   calls atlasFeature({...}) with everything one feature's view shows; it is loaded only when that view opens. */
(function () {
  "use strict";
  const INDEX = window.ATLAS_INDEX;
  const COLS = INDEX.columns;
  const VOCAB = INDEX.vocabularies;
  const N = INDEX.n_features;
  const PAGE = 200; // rows drawn at a time: 16k rows at once would make the page slow
  const loaded = {}; // feature number -> its data, once its script ran
  const requested = {};
  let current = null; // the feature shown, or null on the index
  let shown = PAGE;
  let indexScroll = 0;
  let haystacks = null;

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmt(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(3)));
    return String(value);
  }

  function fmtP(p) {
    if (p === null || p === undefined) return "–";
    return p < 1e-3 ? p.toExponential(1) : String(Number(p.toPrecision(2)));
  }

  function coded(name, i) {
    const codes = COLS[name];
    if (!codes || codes[i] < 0) return "";
    return VOCAB[name][codes[i]];
  }

  const term = (i) => coded("best_term", i);
  const group = (i) => coded("best_group", i);
  const genes = (i) => (COLS.genes ? COLS.genes[i].map((g) => VOCAB.genes[g]) : []);

  // Lower-case text of everything searchable per feature, built on the first search.
  function haystack(i) {
    if (haystacks === null) {
      haystacks = new Array(N);
      for (let f = 0; f < N; f++) {
        const parts = [term(f), coded("best_term_cluster", f), group(f), ...genes(f)];
        if (COLS.description && COLS.description[f]) parts.push(COLS.description[f]);
        haystacks[f] = parts.join("\n").toLowerCase();
      }
    }
    return haystacks[i];
  }

  function matches(i, words) {
    for (const word of words) {
      if (/^\d+$/.test(word) && Number(word) === i) continue;
      if (!haystack(i).includes(word)) return false;
    }
    return true;
  }

  function selected() {
    const words = $("search").value.toLowerCase().split(/\s+/).filter(Boolean);
    const hideDead = COLS.dead && $("hide-dead").checked;
    const hideDense = COLS.dense && $("hide-dense").checked;
    const locality = COLS.locality ? $("locality").value : "";
    const found = [];
    for (let i = 0; i < N; i++) {
      if (hideDead && COLS.dead[i]) continue;
      if (hideDense && COLS.dense[i]) continue;
      if (locality && coded("locality", i) !== locality) continue;
      if (words.length && !matches(i, words)) continue;
      found.push(i);
    }
    const key = $("sort").value;
    if (key !== "feature") {
      const values = COLS[key];
      // Largest first; features without a value last.
      found.sort((a, b) => (values[b] ?? -Infinity) - (values[a] ?? -Infinity) || a - b);
    }
    return found;
  }

  function headerRow() {
    const cells = [el("th", {text: "feature"}), el("th", {text: "best term"}), el("th", {text: "top genes"})];
    if (COLS.best_group) cells.push(el("th", {text: "group"}));
    for (const [name, label] of INDEX.sort) cells.push(el("th", {class: "num", text: label}));
    if (COLS.description) cells.push(el("th", {text: "description"}));
    $("header-row").replaceChildren(...cells);
  }

  function row(i) {
    const dead = COLS.dead && COLS.dead[i];
    const cells = [
      el("td", {}, el("a", {href: "#feature=" + i, text: String(i)})),
      el("td", {class: "term", text: term(i) || (dead ? "dead" : "")}),
      el("td", {class: "genes", text: genes(i).join(" ")}),
    ];
    if (COLS.best_group) cells.push(el("td", {text: group(i)}));
    for (const [name] of INDEX.sort) cells.push(el("td", {class: "num", text: fmt(COLS[name][i])}));
    if (COLS.description) {
      const text = COLS.description[i] || "";
      cells.push(el("td", {class: "desc", title: text}, el("div", {class: "clamp", text: text})));
    }
    const tr = el("tr", {class: dead ? "dead" : null, "data-feature": String(i)}, cells);
    tr.addEventListener("click", (event) => {
      if (event.target.tagName !== "A") location.hash = "feature=" + i;
    });
    return tr;
  }

  function drawIndex() {
    const found = selected();
    $("rows").replaceChildren(...found.slice(0, shown).map(row));
    $("count").textContent = found.length + " of " + N + " features" +
      (found.length > shown ? " (showing the first " + shown + ")" : "");
    $("more").hidden = found.length <= shown;
  }

  function setUpIndex() {
    document.title = INDEX.title;
    $("home").textContent = INDEX.title;
    const facts = [N + " features", INDEX.n_cells + " cells"];
    if (INDEX.groupby) facts.push("groups: " + INDEX.groupby);
    if (INDEX.net) facts.push("gene sets: " + INDEX.net);
    $("summary").textContent = facts.join(" · ");
    const sort = $("sort");
    for (const [name, label] of INDEX.sort) sort.append(el("option", {value: name, text: label}));
    sort.append(el("option", {value: "feature", text: "feature number"}));
    $("dead-filter").hidden = !COLS.dead;
    $("dense-filter").hidden = !COLS.dense;
    $("locality-filter").hidden = !COLS.locality;
    headerRow();
    const redraw = () => { shown = PAGE; drawIndex(); };
    $("search").addEventListener("input", redraw);
    for (const id of ["sort", "hide-dead", "hide-dense", "locality"]) $(id).addEventListener("change", redraw);
    $("more").addEventListener("click", () => { shown += PAGE; drawIndex(); });
  }

  // ---- one feature ----

  function section(title, ...content) {
    return el("section", {}, el("h2", {text: title}), ...content);
  }

  function note(text) {
    return el("p", {class: "note", text: text});
  }

  function bars(rows, cls) {
    // rows: [label, value, shown text]; bar lengths relative to the largest |value|
    const top = Math.max(...rows.map((r) => Math.abs(r[1] || 0)), 1e-12);
    return el("table", {class: "bars"}, rows.map(([label, value, text]) => el("tr", {},
      el("td", {text: label}),
      el("td", {}, el("span", {class: "bar " + cls, style: "width:" + Math.round(120 * Math.abs(value || 0) / top) + "px"})),
      el("td", {class: "num", text: text}))));
  }

  function imagePart(data) {
    if (!INDEX.basis) return null;
    if (!data.image) {
      const why = data.max ? "the atlas has images of the most frequent features only" : "the feature is active in no cell";
      return section("Cells", note("No image: " + why + "."));
    }
    return section("Cells on " + INDEX.basis,
      el("div", {class: "image"}, el("img", {src: data.image, width: 180, height: 180,
        alt: "cells on " + INDEX.basis + " coloured by the activation of feature " + data.id})),
      el("div", {class: "legend"}, el("span", {class: "swatch"}), "inactive", el("span", {class: "ramp"}),
        "activation up to " + fmt(data.max)));
  }

  function genePart(data) {
    if (!data.genes) return section("Top genes", note("No gene loadings: run cellsae_kit.tl.feature_genes(adata) before writing the atlas."));
    const side = (sign, cls, title) => {
      const rows = data.genes[sign];
      return el("div", {}, el("h3", {text: title}),
        rows.length ? bars(rows.map(([g, v]) => [g, v, fmt(v)]), cls) : note("none"));
    };
    return section("Top genes", el("div", {class: "grid"},
      side("positive", "pos", "raised"), side("negative", "neg", "lowered")));
  }

  function termPart(data) {
    if (!INDEX.has_terms) return section("Programmes", note("No annotation: run cellsae_kit.tl.annotate_features(adata) before writing the atlas."));
    if (!data.terms.length) return section("Programmes", note("No gene set scored for this feature."));
    const head = el("tr", {}, el("th", {text: "term"}), el("th", {text: "programme"}), el("th", {class: "num", text: "significant terms"}),
      el("th", {class: "num", text: INDEX.stat}), el("th", {class: "num", text: INDEX.pvalue}));
    const rows = data.terms.map((t) => el("tr", {}, el("td", {text: t.term}), el("td", {text: t.cluster || ""}),
      el("td", {class: "num", text: fmt(t.n_terms)}), el("td", {class: "num", text: fmt(t.stat)}),
      el("td", {class: "num " + (t.p !== null && t.p < INDEX.alpha ? "sig" : "ns"), text: fmtP(t.p)})));
    return section("Programmes (" + INDEX.net + ")", el("table", {}, el("thead", {}, head), el("tbody", {}, rows)));
  }

  function groupPart(data) {
    if (!data.groups) return null;
    const rows = INDEX.groups.map((g, j) => [g, data.groups.mean[j],
      fmt(data.groups.mean[j]) + " · " + Math.round(100 * (data.groups.active[j] || 0)) + "% active"]);
    return section("Activation per group (" + INDEX.groupby + ": mean over all cells · share active)", bars(rows, "group"));
  }

  function neighborPart(data) {
    if (!data.neighbors) return null;
    const rows = data.neighbors.map(([j, c]) => el("tr", {},
      el("td", {}, el("a", {href: "#feature=" + j, text: "feature " + j})),
      el("td", {class: "num", text: fmt(c)}), el("td", {text: term(j)}), el("td", {class: "genes", text: genes(j).join(" ")})));
    const head = el("tr", {}, el("th", {text: "feature"}), el("th", {class: "num", text: "decoder cosine"}),
      el("th", {text: "best term"}), el("th", {text: "top genes"}));
    return section("Nearest features", el("table", {}, el("thead", {}, head), el("tbody", {}, rows)));
  }

  function statsPart(data) {
    const items = Object.entries(data.stats).filter(([name]) => name !== "description");
    const shown = (name, value) => (typeof value === "number" && name.includes("pval") ? fmtP(value) : fmt(value));
    return section("Feature table", el("div", {class: "stats"},
      items.map(([name, value]) => el("div", {}, el("span", {class: "name", text: name}),
        el("span", {class: "value", text: shown(name, value)})))));
  }

  function drawFeature(data) {
    const i = data.id;
    const nav = el("div", {class: "nav"}, el("a", {href: "#", text: "← all features"}),
      i > 0 ? el("a", {href: "#feature=" + (i - 1), text: "← feature " + (i - 1)}) : null,
      i < N - 1 ? el("a", {href: "#feature=" + (i + 1), text: "feature " + (i + 1) + " →"}) : null);
    const title = "Feature " + i + (term(i) ? ": " + term(i) : "");
    const description = data.stats.description ? el("p", {class: "description", text: data.stats.description}) : null;
    const top = [imagePart(data), groupPart(data)].filter(Boolean);
    const parts = [nav, el("h1", {text: title}), description, el("div", {class: "row"}, top), statsPart(data),
      genePart(data), termPart(data), neighborPart(data)];
    $("feature-view").replaceChildren(...parts.filter(Boolean)); // replaceChildren would write null as text
    document.title = "Feature " + i + " · " + INDEX.title;
  }

  window.atlasFeature = function (data) {
    loaded[data.id] = data;
    if (current === data.id) drawFeature(data);
  };

  function showFeature(i) {
    if (current === null) indexScroll = window.scrollY;
    current = i;
    $("index-view").hidden = true;
    $("feature-view").hidden = false;
    window.scrollTo(0, 0);
    if (loaded[i]) { drawFeature(loaded[i]); return; }
    $("feature-view").replaceChildren(el("p", {text: "Loading feature " + i + "…"}));
    if (requested[i]) return;
    requested[i] = true;
    const script = el("script", {src: "features/" + i + ".js"});
    script.addEventListener("error", () => {
      requested[i] = false;
      $("feature-view").replaceChildren(el("p", {text: "features/" + i + ".js is missing from the atlas folder."}));
    });
    document.head.append(script);
  }

  function showIndex() {
    const back = current !== null;
    current = null;
    document.title = INDEX.title;
    $("feature-view").hidden = true;
    $("index-view").hidden = false;
    if (back) window.scrollTo(0, indexScroll);
  }

  function route() {
    const match = /feature=(\d+)/.exec(location.hash);
    const i = match ? Number(match[1]) : NaN;
    if (Number.isInteger(i) && i >= 0 && i < N) showFeature(i);
    else showIndex();
  }

  setUpIndex();
  drawIndex();
  window.addEventListener("hashchange", route);
  route();
})();
