// The README's picture of the desk: a new user on a running stack with the simulated market
// (`./lab up`), who buys one lot from the market maker and opens the order's path.
//   LAB_URL=http://127.0.0.1:8080 node frontend/tests/screenshot.mjs docs/desk.png
import { chromium } from "playwright-core";

const url = process.env.LAB_URL ?? "http://127.0.0.1:8080";
const out = process.argv[2] ?? "desk.png";
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 1350 } });
  await page.goto(url);
  const name = `demo-${Date.now().toString(36)}`;
  const auth = page.locator("#auth-form");
  await auth.getByLabel("Username").fill(name);
  await auth.getByLabel("Password").fill(`${name}-password`);
  await auth.getByRole("button", { name: "Sign up" }).click();
  await page.getByRole("button", { name: "Log out" }).waitFor({ timeout: 15000 });
  // Take the best ask from the ladder and buy one lot at it.
  const ask = page.getByRole("list", { name: "Asks (sell orders)" }).locator("li").last().getByRole("button");
  await ask.waitFor({ timeout: 20000 });
  await ask.click();
  const ticket = page.locator("#ticket");
  await ticket.getByText("Buy", { exact: true }).click();
  await ticket.getByLabel("Quantity").fill("1");
  await ticket.getByRole("button", { name: "Place order" }).click();
  const row = page.locator("#order-history tr[data-order-id]").first();
  await row.waitFor({ timeout: 15000 });
  await row.getByText("Details").click();
  await row.locator("figure.waterfall[data-hops='5']").waitFor({ timeout: 15000 });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForTimeout(1500);
  await page.screenshot({ path: out, fullPage: false });
  console.log(`saved ${out}`);
} finally {
  await browser.close();
}
