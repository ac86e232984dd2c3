// The review app's only script, served by the app itself (the content security policy
// admits no other), and the offline report's: the swipe comparison, the report's
// queue filters and the back link.
document.addEventListener("DOMContentLoaded", () => {
  for (const swipe of document.querySelectorAll("[data-swipe]")) {
    const over = swipe.querySelector(".over");
    const range = swipe.querySelector("input[type=range]");
    const set = () => { over.style.width = range.value + "%"; };
    range.addEventListener("input", set);
    set();
  }
  // The offline report's queue filters in the page: it has no server to ask.
  const filters = [...document.querySelectorAll("[data-filter]")];
  const apply = () => {
    for (const row of document.querySelectorAll("table.queue tbody tr[data-status]")) {
      row.hidden = !filters.every((f) => !f.value || (row.dataset[f.dataset.filter] || "").split(" ").includes(f.value));
    }
  };
  for (const f of filters) f.addEventListener("change", apply);
  for (const back of document.querySelectorAll("[data-back]")) {
    if (history.length > 1) {
      back.addEventListener("click", (e) => { e.preventDefault(); history.back(); });
    }
  }
});
