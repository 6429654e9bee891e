// The frontend's one build step: copy the chart library's standalone file (it defines the global
// `LightweightCharts`) from node_modules into vendor/, where the pages load it. No bundler: the
// pages are plain ES modules served as they are. Run `npm ci && npm run build` in frontend/.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const file = "lightweight-charts.standalone.production.js";
const from = join(here, "node_modules", "lightweight-charts", "dist", file);
const to = join(here, "vendor", file);

mkdirSync(dirname(to), { recursive: true });
copyFileSync(from, to);
console.log(`copied ${file} into vendor/`);
