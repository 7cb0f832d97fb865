"use strict";
(function () {
  var list = document.getElementById("puzzles");
  var cards = Array.prototype.slice.call(list.querySelectorAll("section.puzzle"));
  var byMargin = document.getElementById("sort-margin");
  var byId = document.getElementById("sort-id");
  var filter = document.getElementById("filter");
  var shown = document.getElementById("shown");
  function sort(key) {
    var sorted = cards.slice().sort(function (a, b) {
      if (key === "margin") {
        return parseFloat(a.dataset.minMargin) - parseFloat(b.dataset.minMargin) ||
          a.dataset.id - b.dataset.id;
      }
      return a.dataset.id - b.dataset.id;
    });
    sorted.forEach(function (c) { list.appendChild(c); });
    byMargin.setAttribute("aria-pressed", String(key === "margin"));
    byId.setAttribute("aria-pressed", String(key !== "margin"));
  }
  function applyFilter() {
    var q = filter.value.trim().toLowerCase();
    var n = 0;
    cards.forEach(function (c) {
      var match = q === "" || c.dataset.themes.indexOf(q) !== -1;
      c.hidden = !match;
      if (match) { n += 1; }
    });
    shown.textContent = n + " of " + cards.length + " puzzles shown";
  }
  byMargin.addEventListener("click", function () { sort("margin"); });
  byId.addEventListener("click", function () { sort("id"); });
  filter.addEventListener("input", applyFilter);
  // A link can carry the view: puzzles.html?sort=margin&theme=planet
  var params = new URLSearchParams(location.search);
  if (params.get("sort") === "margin") { sort("margin"); }
  if (params.get("theme")) { filter.value = params.get("theme"); }
  document.getElementById("flag-count").textContent =
    String(list.querySelectorAll("li.word.amb").length);
  applyFilter();
  // Layout forced, then the time since navigation start recorded (bench/review_page.sh).
  void document.body.offsetHeight;
  document.documentElement.dataset.renderMs = performance.now().toFixed(1);
  document.documentElement.dataset.ready = "1";
})();
