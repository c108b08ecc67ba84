// Drives Debian's Chromium (headless, through playwright-core; nothing downloads a browser)
// for ztproxy's browser tests and benchmarks. One JSON command per line on stdin, one JSON
// answer per line on stdout: {"ok": true, ...} or {"ok": false, "error": "..."}.
//
// The tests assert on what the screen shows: they take screenshots and read them with
// ztproxy's own renderer, or read the text of the page's visible status line.

import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const executablePath = process.env.ZT_CHROMIUM ?? "/usr/bin/chromium";
let browser = null;
let context = null;
let page = null;
const consoleLines = [];
const downloads = [];

async function open({ url, width = 800, height = 480, clipboard = false }) {
  browser ??= await chromium.launch({
    executablePath,
    headless: true,
    // Root in a container has no user namespaces for Chromium's sandbox.
    args: ["--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream"],
  });
  if (context) await context.close();
  context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1, acceptDownloads: true });
  if (clipboard) {
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: new URL(url).origin });
  }
  page = await context.newPage();
  page.on("download", (download) => downloads.push(download));
  page.on("console", (message) => {
    if (consoleLines.length < 500) consoleLines.push(`${message.type()}: ${message.text()}`);
  });
  page.on("pageerror", (error) => {
    if (consoleLines.length < 500) consoleLines.push(`pageerror: ${error.message}`);
  });
  const started = Date.now();
  const response = await page.goto(url);
  return { status: response?.status() ?? 0, ms: Date.now() - started };
}

async function status() {
  return page.evaluate(() => {
    const element = document.getElementById("status");
    return {
      state: document.body.dataset.state ?? "",
      text: element && !element.hidden ? element.innerText : "",
    };
  });
}

async function waitState({ state, timeout = 20000 }) {
  const started = Date.now();
  try {
    await page.waitForFunction((s) => document.body.dataset.state === s, state, { timeout, polling: 10 });
  } catch (error) {
    const now = await status();
    throw new Error(`the page did not reach "${state}" in ${timeout} ms; it shows "${now.state}": ${now.text}`);
  }
  return { ms: Date.now() - started, ...(await status()) };
}

const commands = {
  open,
  status,
  wait_state: waitState,
  async type({ text, delay = 5 }) {
    await page.keyboard.type(text, { delay });
    return {};
  },
  async press({ key }) {
    await page.keyboard.press(key);
    return {};
  },
  async down({ key }) {
    await page.keyboard.down(key);
    return {};
  },
  async up({ key }) {
    await page.keyboard.up(key);
    return {};
  },
  async mouse({ action, x = 0, y = 0, button = "left", steps = 1 }) {
    if (action === "move") await page.mouse.move(x, y, { steps });
    else if (action === "down") await page.mouse.down({ button });
    else if (action === "up") await page.mouse.up({ button });
    else if (action === "click") await page.mouse.click(x, y, { button });
    else throw new Error(`unknown mouse action ${action}`);
    return {};
  },
  async screenshot({ path }) {
    await page.screenshot({ path, animations: "disabled", caret: "initial" });
    return { path };
  },
  async resize({ width, height }) {
    await page.setViewportSize({ width, height });
    return {};
  },
  async clipboard_read() {
    return { text: await page.evaluate(() => navigator.clipboard.readText()) };
  },
  async clipboard_write({ text }) {
    await page.evaluate((t) => navigator.clipboard.writeText(t), text);
    return {};
  },
  async click({ selector }) {
    await page.click(selector);
    return {};
  },
  async seek({ value }) {
    // What dragging the seek bar's thumb to `value` does: set it, then the input event.
    await page.$eval(
      "#position",
      (input, v) => {
        input.value = String(v);
        input.dispatchEvent(new Event("input", { bubbles: true }));
      },
      value,
    );
    return {};
  },
  async wait_attr({ name, value, timeout = 20000 }) {
    await page.waitForFunction(
      ([n, v]) => document.body.dataset[n] === v,
      [name, String(value)],
      { timeout, polling: 10 },
    );
    return {};
  },
  async pause({ ms }) {
    // For the demo only (the tests wait on what the screen shows).
    await new Promise((resolve) => setTimeout(resolve, ms));
    return {};
  },
  async wait_selector({ selector, timeout = 20000 }) {
    // Until an element matching `selector` is visible; its text.
    const element = await page.waitForSelector(selector, { timeout, state: "visible" });
    return { text: await element.innerText() };
  },
  async text({ selector }) {
    return { text: await page.locator(selector).innerText() };
  },
  async fetch({ path, method = "GET", body = null, headers = {} }) {
    // A request the page itself makes (same origin, with its Origin header).
    return page.evaluate(
      async ([p, m, b, h]) => {
        const response = await fetch(new URL(p, location.href), { method: m, body: b, headers: h });
        return { status: response.status, body: await response.text() };
      },
      [path, method, body, headers],
    );
  },
  async first_frame({ url, width = 800, height = 480, timeout = 20000 }) {
    // Opens `url` in a fresh window; how long from the start of loading to the first frame
    // the display drew (the page's mark), in milliseconds.
    await open({ url, width, height });
    await page.waitForFunction(() => document.body.dataset.firstFrame !== undefined, null, { timeout, polling: 5 });
    const marks = await page.evaluate(() =>
      Object.fromEntries(
        performance
          .getEntriesByType("mark")
          .filter((mark) => mark.name !== "zt-frame")
          .map((mark) => [mark.name, Math.round(mark.startTime * 10) / 10]),
      ),
    );
    return { ms: Number(await page.evaluate(() => document.body.dataset.firstFrame)), marks };
  },
  async key_latency({ keys, timeout = 10000 }) {
    // For each key: press it, wait until the display's pixels change, and take the time
    // from the key event to the drawn frame that changed them.
    await page.evaluate(() => {
      window.__ztKeyDowns = [];
      document.addEventListener("keydown", (event) => window.__ztKeyDowns.push(performance.now()), { capture: true });
      window.__ztPixels = () => {
        let best = null;
        for (const canvas of document.querySelectorAll("#display canvas")) {
          if (!best || canvas.width * canvas.height > best.width * best.height) best = canvas;
        }
        const data = best.getContext("2d").getImageData(0, 0, best.width, best.height).data;
        let hash = 0;
        for (let i = 0; i < data.length; i += 4) hash = (Math.imul(hash, 31) + data[i] + (data[i + 1] << 8) + (data[i + 2] << 16)) | 0;
        return hash;
      };
    });
    const latencies = [];
    for (const key of keys) {
      // Keys a tenth of a second apart, as a typist's (the terminal draws at most 25 frames
      // a second, so keys closer together would measure its pacing).
      await new Promise((resolve) => setTimeout(resolve, 100));
      const before = await page.evaluate(() => window.__ztPixels());
      const downs = await page.evaluate(() => window.__ztKeyDowns.length);
      await page.keyboard.press(key);
      const ms = await page.waitForFunction(
        ([before, downs]) => {
          const down = window.__ztKeyDowns[downs];
          if (down === undefined || window.__ztPixels() === before) return false;
          const frame = performance.getEntriesByName("zt-frame").find((mark) => mark.startTime >= down);
          return frame ? frame.startTime - down : false;
        },
        [before, downs],
        { timeout, polling: "raf" },
      );
      latencies.push(await ms.jsonValue());
    }
    return { latencies };
  },
  async wait_download({ path, timeout = 20000 }) {
    // The next file the page saved, written to `path`.
    const started = Date.now();
    while (downloads.length === 0) {
      if (Date.now() - started > timeout) throw new Error("no download");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const download = downloads.shift();
    await download.saveAs(path);
    return { name: download.suggestedFilename(), path };
  },
  async drop_file({ name, base64, type = "application/octet-stream", selector = "#display" }) {
    // What dropping a file from the desktop onto the display does: a drop event whose
    // DataTransfer holds the file.
    const transfer = await page.evaluateHandle(
      ([n, b, t]) => {
        const bytes = Uint8Array.from(atob(b), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], n, { type: t }));
        return data;
      },
      [name, base64, type],
    );
    await page.dispatchEvent(selector, "dragover", { dataTransfer: transfer });
    await page.dispatchEvent(selector, "drop", { dataTransfer: transfer });
    return {};
  },
  async lab({ width = 400, height = 300 }) {
    // An empty page of a secure origin (loopback) that no server serves: the driver answers
    // its request itself. The tunnel lab (tests/tunnel-lab.js) is loaded into it.
    const url = "http://127.0.0.1:9/lab";
    await open({ url: "about:blank", width, height });
    await page.route(url, (route) =>
      route.fulfill({ status: 200, contentType: "text/html", body: "<!doctype html><title>ztproxy tunnel lab</title>" }),
    );
    await page.goto(url);
    await page.addScriptTag({ content: readFileSync(new URL("./tunnel-lab.js", import.meta.url), "utf8") });
    return {};
  },
  async eval({ expression }) {
    // The value of `expression` in the page (awaited when it is a promise).
    return { value: await page.evaluate(expression) };
  },
  async console() {
    return { lines: consoleLines.splice(0) };
  },
  async close() {
    if (browser) await browser.close();
    browser = context = page = null;
    return {};
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  let answer;
  try {
    const command = JSON.parse(line);
    const run = commands[command.op];
    if (!run) throw new Error(`unknown command ${command.op}`);
    answer = { ok: true, ...(await run(command)) };
  } catch (error) {
    answer = { ok: false, error: error instanceof Error ? error.message : String(error) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
if (browser) await browser.close();
