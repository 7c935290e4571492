// Drives Debian's Chromium through roomcast's chat page, as a host (super admin, owner and
// moderator) and two viewers. Run by tests/browser.rs:
//
//   node tests/browser/chat.mjs <url> <host-token> <alice-token> <bob-token>
//
// Env: ROOMCAST_CHROMIUM (default /usr/bin/chromium), ROOMCAST_SHOTS (screenshot folder),
// ROOMCAST_ADAPTER (screenshot name prefix). Exits 0 and prints "browser scenario passed"
// when every check held; else prints FAIL and exits 1.

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [url, hostToken, aliceToken, bobToken] = process.argv.slice(2);
if (!url || !hostToken || !aliceToken || !bobToken) {
  console.error("usage: node chat.mjs <url> <host-token> <alice-token> <bob-token>");
  process.exit(2);
}
const executablePath = process.env.ROOMCAST_CHROMIUM || "/usr/bin/chromium";
const shots = process.env.ROOMCAST_SHOTS || join(process.cwd(), "screenshots");
const adapter = process.env.ROOMCAST_ADAPTER || "page";
const STEP_MS = 15000; // one wait
const TOTAL_MS = Number(process.env.ROOMCAST_BROWSER_TIMEOUT_MS || 150000); // the whole run
mkdirSync(shots, { recursive: true });

const started = Date.now();
function log(line) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${line}`);
}
function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
}

const watchdog = setTimeout(() => {
  console.log(`FAIL: the scenario did not finish within ${TOTAL_MS} ms`);
  process.exit(1);
}, TOTAL_MS);

// Each user gets a browser context of its own (its own window, so that no page is a background
// tab whose timers and frames the browser throttles). Playwright's launch() gives Chromium a
// fresh temporary user data dir and removes it on close.
let browser;
const pages = {};

async function shot(page, step) {
  const path = join(shots, `${adapter}-${step}.png`);
  await page.screenshot({ path, fullPage: false, timeout: STEP_MS });
  log(`screenshot ${path}`);
}

// Waits until fn(arg) is truthy in the page, within a deadline; says what it waited for.
async function until(page, what, fn, arg, timeout = STEP_MS) {
  const t0 = Date.now();
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout, polling: 50 });
    const value = await handle.jsonValue();
    if (Date.now() - t0 > 700) log(`(slow: ${page.__name} waited ${Date.now() - t0} ms for ${what})`);
    return value;
  } catch (e) {
    throw new Error(`${page.__name}: timed out waiting for ${what} (${e.message.split("\n")[0]})`);
  }
}

const online = (page) =>
  until(page, "online", () => document.getElementById("conn").dataset.state === "online");

// The current room's message list as data: [{seq, text, from, history, pending, sent, error}].
function messagesOf(page) {
  return page.evaluate(() =>
    Array.from(document.querySelectorAll(".msglist:not([hidden]) > li.msg")).map((li) => ({
      seq: li.dataset.seq === undefined ? null : Number(li.dataset.seq),
      text: li.querySelector(".text").textContent,
      from: li.dataset.from || null,
      history: li.dataset.history === "true",
      pending: li.dataset.pending === "true",
      sent: li.dataset.sent === "true",
      error: li.dataset.error || null,
      status: (li.querySelector(".status") || {}).textContent || "",
    })),
  );
}

// Sees a message with this text in the current room (from someone else or sent).
const seesText = (page, text, what) =>
  until(
    page,
    what || `the message ${JSON.stringify(text)}`,
    (t) =>
      Array.from(document.querySelectorAll(".msglist:not([hidden]) > li.msg")).some(
        (li) => li.querySelector(".text").textContent === t && li.dataset.seq !== undefined,
      ),
    text,
  );

const seesLine = (page, re, what) =>
  until(
    page,
    what || `a line matching ${re}`,
    (src) => {
      const r = new RegExp(src);
      return Array.from(document.querySelectorAll(".msglist:not([hidden]) > li.line")).some((li) =>
        r.test(li.textContent),
      );
    },
    re.source,
  );

// Types text into the composer and presses Enter; waits for it to be sent or refused.
async function say(page, text) {
  await page.fill("#composer-text", text);
  await page.press("#composer-text", "Enter");
  const result = await until(
    page,
    `the answer to sending ${JSON.stringify(text)}`,
    (t) => {
      const own = Array.from(document.querySelectorAll(".msglist:not([hidden]) > li.msg.own")).filter(
        (li) => li.querySelector(".text").textContent === t,
      );
      const li = own[own.length - 1];
      if (!li || li.dataset.pending === "true") return null;
      if (li.dataset.sent === "true") return { seq: Number(li.dataset.seq) };
      if (li.dataset.error) return { error: li.dataset.error, status: li.querySelector(".status").textContent };
      return null;
    },
    text,
  );
  return result;
}

async function newPage(name, width, height) {
  const context = await browser.newContext({ viewport: { width, height } });
  context.setDefaultTimeout(STEP_MS);
  const page = await context.newPage();
  page.__name = name;
  page.on("pageerror", (e) => {
    console.log(`FAIL: ${name}: uncaught page error: ${e.message}`);
    pages.__errors = (pages.__errors || 0) + 1;
  });
  page.on("console", (m) => {
    if (m.type() === "error") log(`${name} console error: ${m.text()}`);
  });
  pages[name] = page;
  return page;
}

async function joinRoom(page, filter, roomId) {
  await page.fill("#room-filter", filter);
  await until(
    page,
    "the room in the filtered list",
    (id) => !!document.querySelector(`#room-list li[data-room="${id}"]`),
    roomId,
  );
  await page.click(`#room-list li[data-room="${roomId}"] button[data-action="join"]`);
  await until(
    page,
    "the joined room",
    (id) => {
      const s = window.roomcastDebug.state();
      return s.current === id && s.rooms[id] && s.rooms[id].joined;
    },
    roomId,
  );
}

async function noInjection(page, what) {
  const r = await page.evaluate(() => ({
    xss: window.__xss === undefined ? null : window.__xss,
    imgs: document.querySelectorAll("#messages img, #announcement img, #member-list img").length,
    scripts: document.querySelectorAll("#messages script, #announcement script").length,
    bolds: document.querySelectorAll("#announcement b").length,
  }));
  check(r.xss === null, `${page.__name}: no injected script ran (${what}), window.__xss = ${r.xss}`);
  check(r.imgs === 0 && r.scripts === 0 && r.bolds === 0, `${page.__name}: no injected element (${what}): ${JSON.stringify(r)}`);
}

// The pane follows new content: the newest item of the current room is scrolled into view.
const newestInView = (page, what) =>
  until(page, `${what} scrolled into view`, () => {
    const box = document.getElementById("messages").getBoundingClientRect();
    const items = document.querySelectorAll(".msglist:not([hidden]) > li");
    const last = items[items.length - 1];
    if (!last) return false;
    const r = last.getBoundingClientRect();
    return r.top >= box.top - 1 && r.bottom <= box.bottom + 1;
  });

async function noHorizontalOverflow(page, what) {
  const r = await page.evaluate(() => {
    const m = document.getElementById("messages");
    return {
      doc: document.documentElement.scrollWidth,
      view: window.innerWidth,
      box: m.scrollWidth,
      boxView: m.clientWidth,
    };
  });
  check(r.doc <= r.view && r.box <= r.boxView + 1, `${page.__name}: no horizontal overflow (${what}): ${JSON.stringify(r)}`);
}

async function main() {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: 30000,
  });
  log(`chromium ${browser.version()} started`);

  // A bad token: the page shows the refusal.
  const stranger = await newPage("stranger", 1000, 700);
  await stranger.goto(url + "#token=not-a-token");
  await until(stranger, "the login refusal", () => {
    const e = document.getElementById("login-error");
    return !e.hidden && /refused/i.test(e.textContent);
  });
  await until(stranger, "offline after a refusal", () => document.getElementById("conn").dataset.state === "offline");
  log("ok - a bad token is refused with its reason: " + (await stranger.textContent("#login-error")));
  await shot(stranger, "login-refused");
  await stranger.context().close();

  // The host: auto-login from the hash; only a super admin sees Create.
  const host = await newPage("host", 1100, 760);
  await host.goto(url + "#token=" + encodeURIComponent(hostToken));
  await online(host);
  await until(host, "the create form", () => !document.getElementById("create-form").hidden);
  const roomName = `Launch stream (${adapter})`;
  await host.fill("#create-name", roomName);
  await host.click("#create-button");
  const roomId = await until(host, "the created room open", () => {
    const s = window.roomcastDebug.state();
    return s.current && s.rooms[s.current] && s.rooms[s.current].joined ? s.current : null;
  });
  await until(host, "the owner's moderation panel", () => !document.getElementById("mod").hidden);
  log(`ok - host created room ${roomId} and owns it`);
  const welcome = "Welcome to the launch! (sent before anyone joined)";
  check((await say(host, welcome)).seq === 1, "the first message has seq 1");

  // Alice logs in by typing her token.
  const alice = await newPage("alice", 1100, 760);
  await alice.goto(url);
  await alice.fill("#login-token", aliceToken);
  await alice.click("#login-button");
  await online(alice);
  check(await alice.isHidden("#create-form"), "a viewer has no Create button");
  await joinRoom(alice, "launch", roomId);
  await seesText(alice, welcome);
  const aliceFirst = (await messagesOf(alice)).find((m) => m.text === welcome);
  check(aliceFirst.history, "a message from before the join is marked as history");
  check(await alice.isHidden("#mod"), "a viewer has no moderation panel");
  log("ok - alice logged in with the token field, found the room by filter, joined, saw history");

  // Bob: a phone.
  const bob = await newPage("bob", 375, 740);
  await bob.goto(url + "#token=" + encodeURIComponent(bobToken));
  await online(bob);
  await joinRoom(bob, "LAUNCH", roomId);
  await seesText(bob, welcome);
  await seesLine(host, /^alice joined$/);
  await seesLine(host, /^bob joined$/);
  await seesLine(alice, /^bob joined$/);
  await until(host, "3 members on the host's page", () => document.getElementById("member-count").dataset.count === "3");
  log("ok - bob joined from a phone; join lines and the member count (3) are shown");

  // Chat both ways; Shift+Enter is a new line.
  const hi = "hi everyone, alice here";
  check((await say(alice, hi)).seq > 1, "alice's message was sent");
  await seesText(host, hi);
  await seesText(bob, hi);
  await alice.fill("#composer-text", "");
  await alice.type("#composer-text", "line one");
  await alice.keyboard.press("Shift+Enter");
  await alice.type("#composer-text", "line two");
  check((await alice.inputValue("#composer-text")) === "line one\nline two", "Shift+Enter adds a new line");
  await alice.press("#composer-text", "Enter");
  await seesText(host, "line one\nline two", "a two-line message");
  const fromHost = "Thanks for coming! Questions welcome.";
  await say(host, fromHost);
  await seesText(alice, fromHost);
  await seesText(bob, fromHost);
  const bobHi = "bob says hello from the phone";
  await say(bob, bobHi);
  await seesText(host, bobHi);
  await seesText(alice, bobHi);
  const long = "long" + "x".repeat(400) + "end";
  await say(alice, long);
  await seesText(bob, long);
  await noHorizontalOverflow(bob, "a 407-character word on a 375 px page");
  await noHorizontalOverflow(host, "a 407-character word");
  log("ok - chat both ways, Shift+Enter, long words wrap");

  // Moderation: the host mutes bob for 60 s; bob's next send shows the error.
  await host.click("#mod summary");
  await until(host, "bob in the member list", () => !!document.querySelector('#member-list li[data-user="bob"]'));
  await host.selectOption('#member-list li[data-user="bob"] select', "60");
  await host.click('#member-list li[data-user="bob"] button[data-action="mute"]');
  await seesLine(host, /^You muted bob for (59|60) s$/);
  await seesLine(bob, /^host muted you for \d+ s$/);
  const muted = "am I muted?";
  const refused = await say(bob, muted);
  check(refused.error === "215" || refused.error === "219", `bob's send is refused as muted: ${JSON.stringify(refused)}`);
  check(/code 21[59]/.test(refused.status), `the error code is shown: ${refused.status}`);
  check(await bob.isVisible("li.msg.failed button.retry"), "a refused message can be retried");
  await newestInView(bob, "the refused message");
  await shot(bob, "muted-375");
  await host.click('#member-list li[data-user="bob"] button[data-action="unmute"]');
  await seesLine(bob, /^host unmuted you$/);
  await bob.click("li.msg.failed button.retry");
  await until(bob, "the retried message sent", (t) =>
    Array.from(document.querySelectorAll("li.msg.own")).some(
      (li) => li.querySelector(".text").textContent === t && li.dataset.sent === "true",
    ), muted);
  await seesText(host, muted);
  log(`ok - a muted viewer's send shows error ${refused.error} ("${refused.status}"); retried after unmute`);

  // Mute-all: 219 for viewers, the host may still talk.
  await host.click("#mute-all");
  await seesLine(alice, /^host muted everyone/);
  await until(alice, "the all-muted badge", () => !document.getElementById("room-allmuted").hidden);
  const quiet = "can I still talk?";
  const allMuted = await say(alice, quiet);
  check(allMuted.error === "219", `mute-all refuses a viewer with 219: ${JSON.stringify(allMuted)}`);
  await say(host, "Only hosts can talk for a moment.");
  await host.click("#unmute-all");
  await seesLine(alice, /^host unmuted everyone$/);
  log("ok - mute all (219 for viewers) and unmute all");

  // XSS strings stay text, in messages and in the announcement.
  const xss1 = '<img src=x onerror="window.__xss=1">';
  const xss2 = "<script>window.__xss=2</script>";
  const xss3 = '<img src=x onerror="window.__xss=3"><b>bold?</b>';
  await say(alice, xss1);
  await say(bob, xss2);
  await host.fill("#announce-text", xss3);
  await host.click("#announce-button");
  for (const p of [host, alice, bob]) {
    await seesText(p, xss1);
    await seesText(p, xss2);
    await until(p, "the announcement as text", (t) => {
      const a = document.getElementById("announcement");
      return !a.hidden && document.getElementById("announcement-text").textContent === t;
    }, xss3);
    const shown = await p.evaluate((t) => Array.from(document.querySelectorAll(".msglist:not([hidden]) li.msg .text"))
      .some((e) => e.textContent === t && e.getClientRects().length > 0 && e.getBoundingClientRect().height > 0), xss1);
    check(shown, `${p.__name}: the img string is visible as text`);
    await noInjection(p, "messages and announcement");
  }
  await seesLine(alice, /^host updated the announcement$/);
  log("ok - XSS strings in messages and the announcement stay text");

  await shot(host, "desktop-host");
  await shot(alice, "desktop-viewer");
  await shot(bob, "viewer-375");

  // Bob's connection drops while the others keep talking; on resume every message is there
  // exactly once, in seq order.
  await bob.evaluate(() => window.roomcastDebug.dropConnection(2500));
  await until(bob, "reconnecting", () => document.getElementById("conn").dataset.state === "reconnecting");
  check(/reconnecting in \d+ s/.test(await bob.textContent("#conn")), "the countdown is shown");
  await shot(bob, "reconnecting-375");
  const burst = [];
  for (let i = 1; i <= 12; i++) {
    const p = i % 2 ? host : alice;
    const text = `while bob was away #${i}`;
    burst.push(text);
    check((await say(p, text)).seq, `burst message ${i} sent`);
  }
  await online(bob);
  for (const text of burst) await seesText(bob, text);
  await say(host, "after the resume");
  await seesText(bob, "after the resume");
  await newestInView(bob, "the newest message after the resume");
  const bobs = (await messagesOf(bob)).filter((m) => m.seq !== null);
  const seqs = bobs.map((m) => m.seq);
  for (let i = 1; i < seqs.length; i++) {
    check(seqs[i] === seqs[i - 1] + 1, `bob's messages are in seq order without gaps or duplicates: ${seqs.join(",")}`);
  }
  for (const text of burst) {
    check(bobs.filter((m) => m.text === text).length === 1, `bob sees ${JSON.stringify(text)} exactly once`);
    check(bobs.find((m) => m.text === text).history, `${JSON.stringify(text)} came back as history`);
  }
  const hostSeqs = (await messagesOf(host)).filter((m) => m.seq !== null).map((m) => m.seq);
  check(hostSeqs.every((s) => s < seqs[0] || seqs.includes(s)), "bob has every message the host has");
  check((await messagesOf(bob)).every((m) => !m.pending), "no message of bob's is left pending");
  log(`ok - bob resumed: seqs ${seqs[0]}..${seqs[seqs.length - 1]}, each once, the ${burst.length} missed ones marked earlier`);

  // The host's view at 375 px with the moderation panel open.
  await host.setViewportSize({ width: 375, height: 740 });
  await noHorizontalOverflow(host, "the host at 375 px");
  await shot(host, "host-375");
  await host.setViewportSize({ width: 1100, height: 760 });

  // Kick: bob is told, the host sees it, alice sees him leave.
  await host.click("#members-refresh");
  await until(host, "bob in the member list", () => !!document.querySelector('#member-list li[data-user="bob"]'));
  await host.click('#member-list li[data-user="bob"] button[data-action="kick"]');
  await seesLine(host, /^bob was removed \(kicked\)$/);
  await seesLine(bob, /^You were removed from the room \(removed by host\)$/);
  await seesLine(alice, /^bob left$/);
  await until(bob, "the composer disabled", () => document.getElementById("send").disabled);
  await newestInView(bob, "the removal line");
  await shot(bob, "kicked-375");
  log("ok - kick: readable lines for everyone");

  // The host reloads: the tab logs in again and reopens its room (already a member: the page
  // shows the newest messages, then joins from the newest one).
  await host.reload();
  await online(host);
  await until(host, "the room reopened after the reload", (id) => {
    const s = window.roomcastDebug.state();
    return s.current === id && s.rooms[id] && s.rooms[id].joined;
  }, roomId);
  await seesText(host, "after the resume");
  const again = (await messagesOf(host)).filter((m) => m.seq !== null);
  check(again.length >= 10 && again.every((m) => m.history), "the newest messages are shown as earlier after the reload");
  for (let i = 1; i < again.length; i++) {
    check(again[i].seq === again[i - 1].seq + 1, `after the reload the messages are in seq order: ${again.map((m) => m.seq)}`);
  }
  const afterReload = "back after a reload";
  await say(alice, afterReload);
  await seesText(host, afterReload);
  log("ok - after a reload the host's tab reopens its room with the newest messages, and live ones follow");

  check(!pages.__errors, "no uncaught page errors");
}

try {
  await main();
  console.log(`browser scenario passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  clearTimeout(watchdog);
  await browser.close().catch(() => {});
  process.exit(0);
} catch (e) {
  console.log("FAIL: " + (e && e.stack ? e.stack : e));
  for (const [name, page] of Object.entries(pages)) {
    if (name.startsWith("__") || page.isClosed()) continue;
    await shot(page, `failure-${name}`).catch(() => {});
  }
  clearTimeout(watchdog);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
