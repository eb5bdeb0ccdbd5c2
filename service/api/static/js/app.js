// The router: `#/jobs`, `#/job/ID`, `#/explore/ID?with=ID2`, `#/compare?ids=A,B`, `#/datasets`, `#/new`. Each page is a
// function (main element, params) returning a cleanup (stop polls and streams) or nothing.
import { apiKey, forgetKey } from "./api.js";
import { clear, errorBox } from "./ui.js";
import { jobsPage } from "./pages/jobs.js";
import { jobPage } from "./pages/job.js";
import { comparePage } from "./pages/compare.js";
import { datasetsPage } from "./pages/datasets.js";
import { modelsPage } from "./pages/models.js";
import { newRunPage } from "./pages/newrun.js";
import { explorePage } from "./pages/explore.js";

const main = document.getElementById("main");
let cleanup = null;

const routes = [
  [/^#\/job\/([^/?]+)/, (m) => jobPage(main, decodeURIComponent(m[1])), "jobs"],
  [/^#\/explore\/([^/?]+)/, (m) => explorePage(main, decodeURIComponent(m[1])), "jobs"],
  [/^#\/compare/, () => comparePage(main), "compare"],
  [/^#\/datasets/, () => datasetsPage(main), "datasets"],
  [/^#\/models/, () => modelsPage(main), "models"],
  [/^#\/new/, () => newRunPage(main), "new"],
  [/^#?\/?(jobs)?/, () => jobsPage(main), "jobs"],
];

async function route() {
  if (cleanup) { try { cleanup(); } catch (_) { /* page already gone */ } cleanup = null; }
  const hash = location.hash || "#/jobs";
  for (const [re, page, nav] of routes) {
    const m = hash.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
    clear(main);
    try {
      cleanup = (await page(m)) || null;
    } catch (err) {
      clear(main, errorBox(err));
    }
    return;
  }
}

function showSignout() { document.getElementById("signout").hidden = !apiKey(); }

document.getElementById("signout").addEventListener("click", () => {
  forgetKey();
  showSignout();
  route();
});
document.addEventListener("dcl:key", showSignout);
window.addEventListener("hashchange", route);
showSignout();
route();
