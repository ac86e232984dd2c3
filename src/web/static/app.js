// The review app's only script, served by the app itself (the content security policy
// admits no other): the swipe comparison and the back link.
document.addEventListener("DOMContentLoaded", () => {
  for (const swipe of document.querySelectorAll("[data-swipe]")) {
    const over = swipe.querySelector(".over");
    const range = swipe.querySelector("input[type=range]");
    const set = () => { over.style.width = range.value + "%"; };
    range.addEventListener("input", set);
    set();
  }
  for (const back of document.querySelectorAll("[data-back]")) {
    if (history.length > 1) {
      back.addEventListener("click", (e) => { e.preventDefault(); history.back(); });
    }
  }
});
