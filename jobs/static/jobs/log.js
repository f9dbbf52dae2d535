// The job page: follows a running job's log over Server-Sent Events, draws ANSI colours,
// folds ::group:: sections, searches the whole log, loads earlier lines on demand, keeps
// the #L<n> line of the URL highlighted, and keeps the facts (status, times, progress,
// line count) current. Job output is untrusted: it reaches the DOM only as text nodes,
// never as HTML.
"use strict";

import { AnsiUp } from "./vendor/ansi_up-6.0.6/ansi_up.js";

// What the page must agree on with the server (page and request sizes, the stream's retry
// delay, the names of streams and statuses) comes from the server, rendered with the page.
const server = JSON.parse(document.getElementById("job-settings").textContent);
const MAX_LIVE_LINES = 5000; // lines kept in the DOM while following a live tail
const MAX_LINES_READING = 20000; // while the user reads above the tail (still bounded)
const PAGE_LINES = server.pageLines; // lines per "Show earlier lines", as many as the page drew
// Screens of lines drawn when a view that follows jumps to the tail: each line drawn costs
// layout and paint in that frame, and the lines above the first screen are only scrolled to.
const JUMP_SCREENS = 2;
const FETCH_LIMIT = server.fetchLimit; // the lines endpoint's maximum per request
// A line at most this far above the shown lines is loaded with every line between;
// farther, as a window around it and a gap marker.
const FILL_LIMIT = 10000;
const TARGET_CONTEXT = 50; // lines shown above a line that had to be loaded
const BOTTOM_SLACK = 24; // pixels from the end that still count as "at the bottom"
// Lines are built for at most this long per animation frame, so that a flood of lines
// never freezes the page; the rest waits for the next frame.
const FRAME_BUDGET_MS = 8;
// A view far behind a flood is redrawn at most this often: no one reads thousands of lines a
// second, and every frame not spent on them is left to the rest of the machine.
const FLOOD_REDRAW_MS = 100;
const SEARCH_PAGE = server.searchPage; // matches per search request
const SEARCH_PAUSE_MS = 250; // typing pause before a search is sent
const RETRY_FIRST_MS = server.retryMs;
const RETRY_MAX_MS = 60000;
const STREAMS = new Set(server.streams);
const STATUS_LABELS = new Map(Object.entries(server.statuses));
const TIME_MODES = ["off", "local", "elapsed"];
const LEVEL = /^(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b/; // a logging record's "LEVEL name: msg"
const GROUP = "::group::";
const ENDGROUP = "::endgroup::";

const byId = (id) => document.getElementById(id);
const page = byId("job");
const log = byId("log");
const scroller = byId("log-scroll");
const followButton = byId("follow");
const earlier = byId("earlier");
const earlierText = byId("earlier-text");
const earlierButton = byId("earlier-button");
const liveBadge = byId("live");
const lineCountBox = byId("line-count");
const data = page.dataset;

let last = Number(data.last); // the highest line number received
let beforeFirst = Number(data.beforeTail); // lines above the first one shown
let finished = data.finished === "true";
let runStatus = data.status;
let lineCount = Number(lineCountBox.textContent); // the server's count at its last status
let startedAt = page.querySelector('time[data-field="started_at"]')?.getAttribute("datetime") ?? null;
let following = true;
let pending = []; // received lines not drawn yet, oldest first
// `lines` events not parsed yet, oldest first ({data, to}: their JSON and their last line):
// a view far behind a flood draws only the newest lines, and most batches need no parsing.
let unparsed = [];
let unparsedTo = 0;
let skipped = false; // lines between the drawn ones and `pending` were never kept
let frame = 0;
let msPerLine = 0.02; // how long building a line takes here (measured as lines are drawn)
let jumpedAt = -Infinity; // when the view last jumped to the tail
let screenLines = 50; // lines the log's viewport shows (known once it is laid out)
let source = null;
let retryTimer = 0;
let retryDelay = RETRY_FIRST_MS;
let loadingEarlier = false;

// --- Settings remembered in the browser ------------------------------------------------------

function remembered(key, fallback) {
  try {
    return localStorage.getItem(`runlog.${key}`) ?? fallback;
  } catch {
    return fallback; // storage refused (privacy settings): the defaults
  }
}

function remember(key, value) {
  try {
    localStorage.setItem(`runlog.${key}`, value);
  } catch {
    // Not remembered, still applied.
  }
}

let timeMode = TIME_MODES.includes(remembered("time", "off")) ? remembered("time", "off") : "off";
let wrap = remembered("wrap", "on") !== "off";

// --- Formatting, the same as the server's ------------------------------------------------

const plural = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;
const formatNumber = (value) => (Number.isInteger(value) ? String(value) : value.toFixed(2));
const pad = (n, width = 2) => String(n).padStart(width, "0");

// Seconds to one decimal as Python's "{:.1f}" writes them: a value exactly halfway between
// two tenths (in binary, only odd quarters of a second are) goes to the even one, where
// toFixed goes up.
function tenths(value) {
  if (!Number.isInteger(value * 4) || Number.isInteger(value * 2)) return value.toFixed(1);
  const down = Math.floor(value * 10);
  return ((down % 2 === 0 ? down : down + 1) / 10).toFixed(1);
}

// jobs.display.format_duration.
function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const value = Math.max(seconds, 0);
  if (value < 60) return `${tenths(value)} s`;
  const whole = Math.floor(value);
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${pad(whole % 60)} s`;
  return `${Math.floor(whole / 3600)} h ${pad(Math.floor((whole % 3600) / 60))} min`;
}

// Times of the facts, as the server renders them (its DATETIME_FORMAT, "Y-m-d H:i:s O"): in
// its time zone, with that zone's offset.
const DATE_PARTS = {
  year: "numeric", month: "2-digit", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "longOffset",
};
let dateFormat;
try {
  dateFormat = new Intl.DateTimeFormat("en-CA", { ...DATE_PARTS, timeZone: data.timeZone || undefined });
} catch {
  dateFormat = new Intl.DateTimeFormat("en-CA", DATE_PARTS); // a zone this browser does not know
}

function formatTime(iso) {
  const parts = {};
  for (const part of dateFormat.formatToParts(new Date(iso))) parts[part.type] = part.value;
  // "GMT", "GMT+01:00", "GMT-03:30" -> "+0000", "+0100", "-0330"
  const [, sign = "+", hours = "00", minutes = "00"] = /^GMT(?:([+-])(\d\d)(?::(\d\d))?)?$/.exec(parts.timeZoneName) ?? [];
  const offset = `${sign}${hours}${minutes}`;
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second} ${offset}`;
}

// A line's own time: the browser's local clock, or the time since the run started.
function lineTime(line) {
  const at = Date.parse(line.t);
  if (timeMode === "local") {
    const d = new Date(at);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }
  if (startedAt === null) return "";
  const elapsed = at - Date.parse(startedAt);
  const ms = Math.abs(elapsed);
  const seconds = Math.floor(ms / 1000);
  const hours = Math.floor(seconds / 3600);
  const clock = `${pad(Math.floor(seconds / 60) % 60, hours ? 2 : 1)}:${pad(seconds % 60)}.${pad(ms % 1000, 3)}`;
  return `${elapsed < 0 ? "-" : "+"}${hours ? `${hours}:` : ""}${clock}`;
}

// --- ANSI escapes ------------------------------------------------------------------------------

// ansi_up interprets SGR parameters into its colour and style state; the text between
// escapes goes into the DOM as text nodes, styled only with ansi_up's fixed class names
// and numeric colours. Every other escape (cursor moves, OSC titles and links, charset
// switches, a sequence cut short) is dropped. Each line starts unstyled, so a line looks
// the same whichever lines are loaded above it.
const ESCAPE =
  /\x1b(?:\[([\x30-\x3f]*)[\x20-\x2f]*([\x40-\x7e])?|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[PX^_][^\x1b]*(?:\x1b\\)?|[\x20-\x2f]*[\x30-\x7e]?)/g;
const SGR_PARAMETERS = /^[\d;:]*$/; // no private marker (<=>?): a plain "CSI ... m"
const ansi = new AnsiUp();

function applySgr(parameters) {
  // ansi_up reads ";"-separated parameters only: colon sub-parameters ("38:2::r:g:b",
  // "4:3") are skipped rather than misread as other attributes.
  if (parameters.includes(":")) {
    parameters = parameters.split(";").filter((part) => !part.includes(":")).join(";");
    if (parameters === "") return; // (an empty list would mean "reset")
  }
  ansi.process_ansi({ text: parameters });
}

function styledText(text) {
  const state = ansi.with_state({ text });
  const classes = [];
  if (state.bold) classes.push("ansi-bold");
  if (state.faint) classes.push("ansi-dim");
  if (state.italic) classes.push("ansi-italic");
  if (state.underline) classes.push("ansi-underline");
  if (!classes.length && !state.fg && !state.bg) return document.createTextNode(text);
  const span = document.createElement("span");
  span.textContent = text;
  // The 16 named colours get the page's palette; 256-colour and 24-bit ones their value.
  for (const [color, suffix, property] of [[state.fg, "fg", "color"], [state.bg, "bg", "backgroundColor"]]) {
    if (!color) continue;
    if (color.class_name === "truecolor") span.style[property] = `rgb(${color.rgb.join(",")})`;
    else classes.push(`${color.class_name}-${suffix}`);
  }
  span.className = classes.join(" ");
  return span;
}

function renderText(element, text) {
  if (!text.includes("\x1b")) {
    element.textContent = text;
    return;
  }
  ansi.process_ansi({ text: "0" });
  let at = 0;
  ESCAPE.lastIndex = 0;
  for (let match; (match = ESCAPE.exec(text)) !== null; ) {
    if (match.index > at) element.append(styledText(text.slice(at, match.index)));
    at = ESCAPE.lastIndex;
    if (match[2] === "m" && SGR_PARAMETERS.test(match[1])) applySgr(match[1]);
  }
  if (at < text.length) element.append(styledText(text.slice(at)));
}

// --- Sections ----------------------------------------------------------------------------------

// A line `::group::Title` starts a section, `::endgroup::` ends the innermost one. Each
// line gets `section` (the innermost section it is in; for a ::group:: line, the one around
// it), `opens` (the section it starts) or `end` (an ::endgroup:: line). Sections are kept
// by their ::group:: line number, so a line parsed again (with more known above it)
// belongs to the same section. A section is folded once it has ended (or the run
// succeeded), unless the user folded or unfolded it, or a failure or a cancel stopped the
// run in it.
const sections = new Map();
let parsedTo = 0; // lines 1..parsedTo have all been parsed: which sections are open there is known
let liveSection = null; // the innermost section open after the last line received
let tailExact = false; // whether the tail's first line was parsed knowing the sections above it
const ended = new Set(); // sections ended by live lines, to redraw at the next frame

// jobs.section() ends its section also when its block raises, and the traceback (stderr)
// or the cancel's note (system) comes after: the sections that ended last, with only such
// lines after them, are where a run that failed or was cancelled stopped.
let stoppedIn = new Set();
let closing = false; // the last line of the tail was an ::endgroup::

const isEndgroup = (text) => text.startsWith(ENDGROUP) && text.trimEnd() === ENDGROUP;

function parse(lines, open) {
  for (const line of lines) {
    line.section = open;
    if (line.text.startsWith(GROUP)) {
      let section = sections.get(line.n);
      if (!section) {
        // `folded`: null as long as isFolded() decides, then what the user chose.
        section = { n: line.n, title: line.text.slice(GROUP.length), start: line.t, end: null, endN: null };
        Object.assign(section, { row: null, folded: null });
        sections.set(line.n, section);
      }
      section.parent = open;
      section.depth = open ? open.depth + 1 : 0;
      line.opens = section;
      open = section;
    } else if (isEndgroup(line.text)) {
      line.end = true;
      if (open) {
        open.end = line.t;
        open.endN = line.n;
        ended.add(open);
        open = open.parent;
      }
    }
  }
  if (lines.length && lines[0].n <= parsedTo + 1) parsedTo = Math.max(parsedTo, lines.at(-1).n);
  return open;
}

// Follows the sections ended at the end of the log, for the last lines of the tail.
function noteStops(lines) {
  for (const line of lines) {
    if (line.end) {
      if (!line.section) continue;
      if (!closing) stoppedIn = new Set();
      stoppedIn.add(line.section);
      closing = true;
    } else {
      closing = false;
      if (line.opens || (line.stream !== "stderr" && line.stream !== "system")) stoppedIn = new Set();
    }
  }
}

// The innermost section open just above line n, and whether that is known (every line
// above it was parsed) or a guess (none).
function sectionAbove(n) {
  if (n - 1 > parsedTo) return { open: null, exact: false };
  let open = null;
  for (const section of sections.values()) {
    const around = section.n < n && (section.endN === null || section.endN >= n);
    if (around && (open === null || section.n > open.n)) open = section;
  }
  return { open, exact: true };
}

const succeeded = () => finished && runStatus === "succeeded";
const stoppedHere = (section) => finished && !succeeded() && stoppedIn.has(section);
const isFolded = (section) => section.folded ?? (!stoppedHere(section) && (section.end !== null || succeeded()));

// A section and the ones around it, innermost first.
function chainOf(section) {
  const chain = [];
  for (let outer = section; outer; outer = outer.parent) chain.push(outer);
  return chain;
}

const insideFolded = (section) => chainOf(section).some(isFolded);
const within = (section, inner) => chainOf(inner).includes(section);

function showSectionState(section) {
  const row = section.row;
  if (!row) return;
  const folded = isFolded(section);
  row.classList.toggle("folded", folded);
  row.classList.toggle("section-open", section.end === null);
  row.querySelector(".fold").setAttribute("aria-expanded", String(!folded));
  // An open section of the live tail lasts until its latest line, so far.
  const end = section.end ?? (within(section, liveSection) ? latestTime : null);
  row.querySelector(".section-time").textContent =
    end === null ? "" : formatDuration((Date.parse(end) - Date.parse(section.start)) / 1000);
}

// Shows or hides the drawn lines of a section after it was folded or unfolded.
function applyFold(section) {
  showSectionState(section);
  let inside = false;
  const start = section.row?.isConnected ? section.row.nextElementSibling : log.firstElementChild;
  for (let row = start; row; row = row.nextElementSibling) {
    const line = lineOf.get(row);
    if (!line) continue; // the gap marker
    if (!within(section, line.section)) {
      if (inside) break;
      continue;
    }
    inside = true;
    row.hidden = insideFolded(line.section);
  }
}

// Folds or unfolds the drawn lines of the sections that lines parsed since last time ended.
function applyEnded() {
  for (const section of ended) applyFold(section);
  ended.clear();
}

function unfoldAround(line) {
  for (const section of chainOf(line.section)) {
    if (isFolded(section)) {
      section.folded = false;
      applyFold(section);
    }
  }
}

// --- Lines -------------------------------------------------------------------------------------

// A line is {n, stream, t, text}, as the server sends it, plus what parse() adds.
const lineOf = new WeakMap(); // a drawn row -> its line
let latestTime = null; // the time of the last line received

function lineElement(line) {
  const row = document.createElement("div");
  let kind = `line stream-${STREAMS.has(line.stream) ? line.stream : "stdout"}`;
  if (line.stream === "log") {
    const level = LEVEL.exec(line.text);
    if (level) kind += ` level-${level[1].toLowerCase()}`;
  }
  if (line.opens) kind += " section-head";
  else if (line.end) kind += " section-end";
  row.className = kind;
  const number = document.createElement("a");
  number.className = "ln";
  number.id = `L${line.n}`;
  number.href = `#L${line.n}`;
  number.textContent = String(line.n);
  row.append(number);
  if (timeMode !== "off") row.append(timeElement(line));
  const text = document.createElement("span");
  text.className = "tx";
  row.append(text);
  if (line.opens) sectionHead(line.opens, row, text);
  else renderText(text, line.text);
  placeRow(row, line);
  if (search.lines.has(line.n)) markMatch(row);
  lineOf.set(row, line);
  return row;
}

function sectionHead(section, row, text) {
  section.row = row;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "fold";
  const title = document.createElement("span");
  title.className = "section-title";
  renderText(title, section.title);
  const time = document.createElement("span");
  time.className = "section-time";
  button.append(title);
  text.append(button, time);
  showSectionState(section);
}

// Indents a row by its sections' depth and hides it inside a folded one.
function placeRow(row, line) {
  const depth = line.opens ? line.opens.depth : line.section ? line.section.depth + 1 : 0;
  if (depth) row.lastElementChild.style.setProperty("--depth", depth);
  else row.lastElementChild.style.removeProperty("--depth");
  row.hidden = line.section !== null && insideFolded(line.section);
}

function timeElement(line) {
  const time = document.createElement("span");
  time.className = "ts";
  time.textContent = lineTime(line);
  return time;
}

function fragmentOf(lines) {
  const fragment = document.createDocumentFragment();
  for (const line of lines) fragment.append(lineElement(line));
  return fragment;
}

const rowOf = (n) => byId(`L${n}`)?.parentElement ?? null;
const firstLine = () => lineOf.get(log.firstElementChild) ?? null;

// --- The blocks of lines shown ---------------------------------------------------------------

// The log shows the tail of the run (its newest lines arrive live) and, when a line far
// above it was asked for, a window of lines around that line above a gap marker.
let view = null; // the window: { gap: the marker element, exact: as tailExact }

function tailFirst() {
  const first = view ? view.gap.nextElementSibling : log.firstElementChild;
  return lineOf.get(first)?.n ?? pending[0]?.n ?? last + 1;
}

function removeView() {
  if (!view) return;
  const range = document.createRange();
  range.setStart(log, 0);
  range.setEndAfter(view.gap);
  range.deleteContents();
  view = null;
}

function gapElement(from, to) {
  const gap = document.createElement("div");
  gap.className = "log-gap";
  const raw = document.createElement("a");
  raw.href = data.rawUrl;
  raw.textContent = "raw log";
  gap.append(`Lines ${from}–${to} are not shown here; see the `, raw, ".");
  return gap;
}

const atBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight <= BOTTOM_SLACK;
const scrollToEnd = () => {
  scroller.scrollTop = scroller.scrollHeight;
};

function setFollowing(on) {
  following = on;
  followButton.hidden = on;
}

// Runs a DOM change above the viewport without moving what the user is looking at. The
// browser's scroll anchoring does that too, except at the very top (scrollTop 0): whatever
// it did, the last shown line is put back where it was.
function keepingView(change) {
  let reference = log.lastElementChild;
  while (reference && (reference.hidden || reference.classList.contains("section-end"))) {
    reference = reference.previousElementSibling;
  }
  const before = reference?.getBoundingClientRect().top;
  change();
  if (reference?.isConnected) scroller.scrollTop += reference.getBoundingClientRect().top - before;
}

function updateEarlier() {
  beforeFirst = (firstLine()?.n ?? pending[0]?.n ?? last + 1) - 1;
  earlier.hidden = beforeFirst <= 0;
  const next = Math.min(beforeFirst, PAGE_LINES);
  earlierText.textContent = `${plural(beforeFirst, "earlier line")} not shown.`;
  earlierButton.textContent = `Show ${plural(next, "earlier line")}`;
  earlierButton.hidden = false;
}

// The highest line number received, parsed or not.
const received = () => Math.max(last, unparsedTo);

function showLineCount() {
  const count = String(Math.max(lineCount, received()));
  if (lineCountBox.textContent !== count) lineCountBox.textContent = count;
}

const schedule = () => {
  if (!frame) frame = requestAnimationFrame(() => drawPending(FRAME_BUDGET_MS));
};

// Live lines: parsed at once (sections, counts), drawn at the next animation frames.
function receive(lines) {
  take(lines);
  schedule();
}

function take(lines) {
  // A reconnection may replay lines already received.
  const fresh = lines.length && lines[0].n > last ? lines : lines.filter((line) => line.n > last);
  if (!fresh.length) return;
  liveSection = parse(fresh, liveSection);
  noteStops(fresh);
  last = fresh.at(-1).n;
  latestTime = fresh.at(-1).t;
  for (const line of fresh) pending.push(line);
  // No frame comes while the tab is hidden: keep no more than a frame would draw.
  if (pending.length > 2 * MAX_LINES_READING) {
    pending = pending.slice(-MAX_LINES_READING);
    skipped = true;
  }
}

// A batch of lines is kept as it came; it is parsed when a frame draws it (absorb).
function receiveBatch(event) {
  const to = Number(event.lastEventId);
  if (!(to > received())) return; // a reconnection's replay
  unparsed.push({ data: event.data, to });
  unparsedTo = to;
  // No frame comes while the tab is hidden: keep no more than a frame would draw.
  if (to - last > 2 * MAX_LINES_READING) absorb(MAX_LINES_READING);
  schedule();
}

const STARTS_OR_ENDS_SECTION = (data) => data.includes(GROUP) || data.includes(ENDGROUP);
// A line of a stream that says the run went on after its sections ended (see noteStops).
const GOES_ON = /"stream":"(?!stderr"|system")/;

// Parses the batches received, but those older than the newest `keep` lines (which are not
// drawn) only as far as what the page keeps of every line: the sections (any batch with a
// marker is parsed) and whether the run went on after its sections ended.
function absorb(keep) {
  const older = unparsedTo - keep; // a batch that ends here or above has no line to draw
  for (const batch of unparsed) {
    if (batch.to > older || STARTS_OR_ENDS_SECTION(batch.data)) {
      take(JSON.parse(batch.data));
      continue;
    }
    if (batch.to <= last) continue;
    if (parsedTo >= last) parsedTo = batch.to; // its lines follow the ones parsed
    closing = false;
    if (GOES_ON.test(batch.data)) stoppedIn = new Set();
    last = batch.to;
    pending = [];
    skipped = true;
  }
  unparsed = [];
}

// Draws pending lines for at most `budget` ms, then leaves the rest to the next frame; `now`
// (at the run's end) draws the last ones at once, jumping to the newest if they are many.
function drawPending(budget, now = false) {
  frame = 0;
  const limit = following ? MAX_LIVE_LINES : MAX_LINES_READING;
  // Far behind (more than this frame can build): a view that follows jumps to the tail and
  // draws only its newest lines, the others become earlier lines; one that reads keeps what
  // it can.
  const fits = Math.max(64, Math.floor(budget / msPerLine));
  const waiting = pending.length + Math.max(0, unparsedTo - last);
  const jump = following && waiting > Math.min(fits, limit);
  if (jump && !now && performance.now() - jumpedAt < FLOOD_REDRAW_MS) {
    frame = requestAnimationFrame(() => drawPending(FRAME_BUDGET_MS));
    return;
  }
  if (jump) jumpedAt = performance.now();
  const keep = jump ? Math.min(fits, JUMP_SCREENS * screenLines) : limit;
  absorb(keep);
  if (pending.length > keep || skipped) {
    pending = pending.slice(-keep);
    skipped = false;
    view = null;
    log.replaceChildren();
  }
  const started = performance.now();
  const deadline = now ? Infinity : started + budget;
  const fragment = document.createDocumentFragment();
  let count = 0;
  for (; count < pending.length; count++) {
    if (count % 64 === 0 && performance.now() > deadline) break;
    fragment.append(lineElement(pending[count]));
  }
  if (count >= 64) msPerLine = 0.7 * msPerLine + (0.3 * (performance.now() - started)) / count;
  pending = pending.slice(count);
  byId("log-empty")?.remove();
  log.append(fragment);
  trim(limit);
  forgetDetachedMarks();
  applyEnded();
  for (const section of chainOf(liveSection)) showSectionState(section);
  updateEarlier();
  showLineCount();
  if (following) scrollToEnd();
  if (pending.length) frame = requestAnimationFrame(() => drawPending(FRAME_BUDGET_MS));
}

// Drops the oldest lines past `limit`, so that a long live tail keeps the page responsive.
function trim(limit) {
  const excess = log.childElementCount - (view ? 1 : 0) - limit;
  if (excess <= 0) return;
  const drop = () => {
    const gapAt = view ? Array.prototype.indexOf.call(log.children, view.gap) : -1;
    const range = document.createRange();
    range.setStart(log, 0);
    range.setEndBefore(log.children[gapAt >= 0 && gapAt <= excess ? excess + 1 : excess]);
    range.deleteContents();
    if (view && !view.gap.isConnected) view = null;
  };
  // While following, the view goes to the end right after: nothing to keep in place.
  if (following) drop();
  else keepingView(drop);
}

async function fetchLines(offset, limit) {
  const response = await fetch(`${data.linesUrl}?offset=${offset}&limit=${limit}`, {
    headers: { Accept: "application/json" },
    credentials: "same-origin",
  });
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  return (await response.json()).lines;
}

// Stored lines from..to (inclusive), in as many requests as the endpoint's limit needs.
async function fetchRange(from, to) {
  const lines = [];
  for (let offset = from - 1; offset < to; offset += FETCH_LIMIT) {
    const batch = await fetchLines(offset, Math.min(FETCH_LIMIT, to - offset));
    if (!batch.length) break;
    for (const line of batch) lines.push(line);
  }
  return lines;
}

// Puts lines just above the first line of the window, or of the tail. If they end inside
// a section, the block below them learns it: its lines are parsed again from there.
function prepend(lines) {
  const above = sectionAbove(lines[0].n);
  const open = parse(lines, above.open);
  const below = view ? "view" : "tail";
  const exact = below === "view" ? view.exact : tailExact;
  let rows = [];
  if (open && !exact) {
    const end = view ? view.gap : null;
    for (let row = log.firstElementChild; row && row !== end; row = row.nextElementSibling) rows.push(row);
    const again = parse(rows.map((row) => lineOf.get(row)), open);
    if (below === "tail") liveSection = parse(pending, again);
  }
  keepingView(() => {
    log.prepend(fragmentOf(lines));
    for (const row of rows) placeRow(row, lineOf.get(row));
    applyEnded();
    updateEarlier();
  });
  if (below === "view") view.exact = above.exact;
  else tailExact = above.exact;
}

// Loads the lines from..the first shown one, above it.
async function loadAbove(from) {
  const to = beforeFirst;
  const lines = await fetchRange(from, to);
  // Lines drawn or trimmed meanwhile: the first shown line is no longer the one after them.
  if (!lines.length || beforeFirst !== to) return;
  prepend(lines);
}

async function showEarlier() {
  if (loadingEarlier || beforeFirst <= 0) return;
  loadingEarlier = true;
  earlierButton.disabled = true;
  try {
    await loadAbove(Math.max(1, beforeFirst - PAGE_LINES + 1));
  } catch (error) {
    earlierText.textContent = `Could not load earlier lines (${error.message}).`;
  } finally {
    loadingEarlier = false;
    earlierButton.disabled = false;
  }
}

// A line far from the shown ones: a window around it (replacing any other window), then a
// gap marker for the lines between it and the tail.
async function openWindow(n) {
  const tail = tailFirst();
  const from = Math.max(1, n - TARGET_CONTEXT);
  const to = Math.min(from + PAGE_LINES - 1, tail - 1);
  const lines = await fetchRange(from, to);
  if (!lines.length || tailFirst() !== tail) return;
  keepingView(removeView);
  forgetDetachedMarks();
  // A window that reaches the tail is part of it.
  if (lines.at(-1).n === tail - 1) {
    prepend(lines);
    return;
  }
  const above = sectionAbove(from);
  parse(lines, above.open);
  const gap = gapElement(lines.at(-1).n + 1, tail - 1);
  keepingView(() => {
    log.prepend(fragmentOf(lines), gap);
    view = { gap, exact: above.exact };
    applyEnded();
    updateEarlier();
  });
}

let navigation = 0; // the latest reveal(): one still loading its lines must not scroll after it

// Makes line n drawn (loading it and lines around it if needed), unfolds its sections and
// scrolls to it. Returns its row, or null for a line that does not exist or a reveal that
// a later one overtook.
async function reveal(n) {
  const ticket = ++navigation;
  absorb(Infinity);
  if (!rowOf(n) && pending.length && n >= pending[0].n) drawPending(Infinity);
  if (!rowOf(n) && n >= 1 && n <= last) {
    const top = beforeFirst + 1;
    if (n < top && top - n < FILL_LIMIT) await loadAbove(Math.max(1, n - TARGET_CONTEXT));
    else await openWindow(n);
  }
  const row = rowOf(n);
  if (!row || ticket !== navigation) return null;
  unfoldAround(lineOf.get(row));
  setFollowing(false);
  // An ::endgroup:: line is never shown: the line before it stands in for it.
  let shown = row;
  while (shown.previousElementSibling && (shown.hidden || shown.classList.contains("section-end"))) {
    shown = shown.previousElementSibling;
  }
  shown.scrollIntoView({ block: "center" });
  return row;
}

// --- #L<n>: the permalink of a line -----------------------------------------------------

function hashLine() {
  const match = /^#L(\d+)$/.exec(location.hash);
  return match ? Number(match[1]) : null;
}

function highlight(n) {
  for (const row of log.querySelectorAll(".line.highlight")) row.classList.remove("highlight");
  rowOf(n)?.classList.add("highlight");
}

async function goToLine(n) {
  try {
    if (await reveal(n)) highlight(n);
  } catch (error) {
    earlierText.textContent = `Could not load line ${n} (${error.message}).`;
  }
}

log.addEventListener("click", (event) => {
  const fold = event.target.closest("button.fold");
  if (fold) {
    const section = lineOf.get(fold.closest(".line")).opens;
    section.folded = !isFolded(section);
    applyFold(section);
    return;
  }
  const link = event.target.closest("a.ln");
  if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  history.replaceState(null, "", `#${link.id}`);
  highlight(Number(link.id.slice(1)));
  setFollowing(false);
});

window.addEventListener("hashchange", () => {
  const n = hashLine();
  if (n !== null) goToLine(n);
});

scroller.addEventListener("scroll", () => {
  const bottom = atBottom();
  if (bottom !== following) setFollowing(bottom);
});

// The log's height changes with the page around it (facts, progress, a wrapped toolbar):
// a view that follows stays at the end.
const lineHeight = parseFloat(getComputedStyle(log).lineHeight) || 20;
new ResizeObserver((entries) => {
  screenLines = Math.max(10, Math.ceil(entries.at(-1).contentRect.height / lineHeight));
  if (following) scrollToEnd();
}).observe(scroller);

followButton.addEventListener("click", () => {
  setFollowing(true);
  scrollToEnd();
});

earlierButton.addEventListener("click", showEarlier);

// --- Search over the whole log (the server searches; the page shows and jumps) ---------------

const searchForm = byId("search");
const searchInput = byId("search-input");
const searchCase = byId("search-case");
const searchRegex = byId("search-regex");
const searchCount = byId("search-count");
const highlights = typeof Highlight === "function" && CSS.highlights ? new Highlight() : null;
if (highlights) CSS.highlights.set("search", highlights);

const search = {
  key: "", // the query and its options, as sent
  matches: [], // line numbers, ascending
  lines: new Set(),
  more: false, // lines after `searched` may match
  searched: 0, // the last line the server has searched: `matches` are all of those up to it
  index: -1, // the current match
  pattern: null, // the same search in JavaScript, to highlight the text that matched
  controller: null,
  timer: 0,
};

function searchParameters(after) {
  return new URLSearchParams({
    q: searchInput.value,
    regex: searchRegex.checked ? "1" : "0",
    case: searchCase.checked ? "1" : "0",
    after: String(after),
    limit: String(SEARCH_PAGE),
  });
}

async function fetchMatches(after) {
  search.controller?.abort();
  search.controller = new AbortController();
  const response = await fetch(`${data.searchUrl}?${searchParameters(after)}`, {
    headers: { Accept: "application/json" },
    credentials: "same-origin",
    signal: search.controller.signal,
  });
  if (response.status === 400) throw new SyntaxError((await response.text()).trim());
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  return response.json();
}

// Asks from line `after` until an answer brings matches or the server has searched every
// line: an answer stops after about half a second, saying how far it searched. False if
// another search replaced this one meanwhile.
async function fetchMore(after, key) {
  for (;;) {
    const answer = await fetchMatches(after);
    if (search.key !== key) return false;
    search.more = answer.more;
    search.searched = answer.searched;
    addMatches(answer.matches);
    if (answer.matches.length || !answer.more) return true;
    showCount(`Searching… line ${answer.searched.toLocaleString()} of ${answer.line_count.toLocaleString()}`);
    after = answer.searched;
  }
}

function jsPattern() {
  const flags = searchCase.checked ? "g" : "gi";
  const source = searchRegex.checked ? searchInput.value : searchInput.value.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  try {
    return new RegExp(source, flags);
  } catch {
    return null; // a pattern only Python reads: its lines are still marked, not their text
  }
}

function markMatch(row) {
  row.classList.add("match");
  if (search.matches[search.index] === lineOf.get(row)?.n) row.classList.add("match-current");
  if (!highlights || !search.pattern) return;
  // Ranges over the line's text nodes, which ANSI styling may split.
  const nodes = [];
  let text = "";
  const root = row.querySelector(".section-title") ?? row.querySelector(".tx");
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode()); ) {
    nodes.push([text.length, node]);
    text += node.data;
  }
  const position = (offset) => {
    let index = nodes.length - 1;
    while (index > 0 && nodes[index][0] > offset) index--;
    return [nodes[index][1], offset - nodes[index][0]];
  };
  search.pattern.lastIndex = 0;
  for (let match; (match = search.pattern.exec(text)) !== null; ) {
    if (match[0] === "") {
      search.pattern.lastIndex++;
      continue;
    }
    // Static: the row may still be in a fragment, and a live Range would collapse when
    // its nodes move into the log.
    const [startContainer, startOffset] = position(match.index);
    const [endContainer, endOffset] = position(match.index + match[0].length);
    highlights.add(new StaticRange({ startContainer, startOffset, endContainer, endOffset }));
  }
}

// Highlighted text of lines no longer drawn.
function forgetDetachedMarks() {
  if (!highlights?.size) return;
  for (const range of highlights) if (!range.startContainer.isConnected) highlights.delete(range);
}

function clearMarks() {
  for (const row of log.querySelectorAll(".line.match")) row.classList.remove("match", "match-current");
  highlights?.clear();
}

function showCount(text) {
  searchCount.textContent = text;
}

function showPosition() {
  if (!search.matches.length) showCount("No matches");
  else showCount(`${search.index + 1} / ${search.matches.length}${search.more ? "+" : ""}`);
}

function addMatches(matches) {
  for (const n of matches) {
    search.matches.push(n);
    search.lines.add(n);
    const row = rowOf(n);
    if (row) markMatch(row);
  }
}

const searchKey = () => `${searchInput.value}\n${searchRegex.checked}\n${searchCase.checked}`;

async function runSearch() {
  clearTimeout(search.timer);
  const key = searchKey();
  if (key === search.key) return;
  search.key = key;
  clearMarks();
  Object.assign(search, { matches: [], lines: new Set(), more: false, searched: 0, index: -1, pattern: null });
  if (searchInput.value === "") {
    search.controller?.abort();
    showCount("");
    return;
  }
  showCount("Searching…");
  search.pattern = jsPattern();
  try {
    if (!(await fetchMore(0, key))) return;
  } catch (error) {
    if (error.name !== "AbortError") showCount(error.message);
    return;
  }
  // The first match from the top of what the user is looking at, else the first one.
  const top = firstVisibleLine();
  const index = search.matches.findIndex((n) => n >= top);
  await goToMatch(index < 0 ? 0 : index);
}

function firstVisibleLine() {
  const box = scroller.getBoundingClientRect();
  const element = document.elementFromPoint(box.left + box.width / 2, box.top + 4);
  return lineOf.get(element?.closest(".line"))?.n ?? 0;
}

async function goToMatch(index) {
  if (!search.matches.length) {
    showPosition();
    return;
  }
  search.index = index;
  showPosition();
  const n = search.matches[index];
  for (const row of log.querySelectorAll(".line.match-current")) row.classList.remove("match-current");
  try {
    const row = await reveal(n);
    if (search.matches[search.index] === n) row?.classList.add("match-current");
  } catch (error) {
    showCount(`Could not load line ${n} (${error.message}).`);
  }
}

async function step(direction) {
  if (searchInput.value === "") return;
  if (searchKey() !== search.key) {
    await runSearch();
    return;
  }
  let index = search.index + direction;
  // Past the last match known: the server's next page, or lines that arrived since.
  if (index >= search.matches.length && (search.more || !finished) && search.matches.length) {
    try {
      if (!(await fetchMore(search.searched, search.key))) return;
    } catch (error) {
      if (error.name !== "AbortError") showCount(error.message);
      return;
    }
  }
  const count = search.matches.length;
  if (count) await goToMatch(((index % count) + count) % count);
}

searchInput.addEventListener("input", () => {
  clearTimeout(search.timer);
  search.timer = setTimeout(runSearch, SEARCH_PAUSE_MS);
});
searchCase.addEventListener("change", runSearch);
searchRegex.addEventListener("change", runSearch);
searchForm.addEventListener("submit", (event) => {
  event.preventDefault();
  step(1);
});
searchInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.shiftKey) {
    event.preventDefault();
    step(-1);
  } else if (event.key === "Escape") {
    searchInput.value = "";
    runSearch();
  }
});
byId("search-previous").addEventListener("click", () => step(-1));

// --- Display options: timestamps and wrapping -------------------------------------------------

const timeSelect = byId("time-mode");
const wrapBox = byId("wrap");

function showTimes() {
  for (const row of log.children) {
    const line = lineOf.get(row);
    if (!line) continue;
    row.querySelector(".ts")?.remove();
    if (timeMode !== "off") row.lastElementChild.before(timeElement(line));
  }
}

timeSelect.value = timeMode;
timeSelect.addEventListener("change", () => {
  timeMode = TIME_MODES.includes(timeSelect.value) ? timeSelect.value : "off";
  remember("time", timeMode);
  showTimes();
  if (following) scrollToEnd();
});

wrapBox.checked = wrap;
log.classList.toggle("nowrap", !wrap);
wrapBox.addEventListener("change", () => {
  wrap = wrapBox.checked;
  remember("wrap", wrap ? "on" : "off");
  log.classList.toggle("nowrap", !wrap);
  if (following) scrollToEnd();
});

// --- Status, duration, progress ------------------------------------------------------------

// The duration ticks between status events from the last one the server sent.
let durationBase = data.duration === "" ? null : Number(data.duration);
let durationAt = performance.now();
let ticking = 0;

function showDuration() {
  const elapsed = finished || durationBase === null ? 0 : (performance.now() - durationAt) / 1000;
  byId("duration").textContent = formatDuration(durationBase === null ? null : durationBase + elapsed);
}

function tick(running) {
  if (running && !ticking) ticking = setInterval(showDuration, 1000);
  if (!running && ticking) {
    clearInterval(ticking);
    ticking = 0;
  }
}

function setTime(field, iso) {
  const element = page.querySelector(`time[data-field="${field}"]`);
  if (!element) return;
  if (iso) {
    element.dateTime = iso;
    element.textContent = formatTime(iso);
  } else {
    element.removeAttribute("datetime");
    element.textContent = "—";
  }
}

function applyProgress(progress) {
  if (!progress || (progress.done === null && progress.total === null)) return;
  const bar = byId("progress");
  if (progress.total) {
    bar.max = progress.total;
    bar.value = progress.done ?? 0;
  } else {
    bar.removeAttribute("value"); // no total: an indeterminate bar
  }
  let text = progress.done === null ? "" : formatNumber(progress.done);
  if (progress.done !== null && progress.total) text += ` / ${formatNumber(progress.total)}`;
  if (progress.message) text += ` · ${progress.message}`;
  byId("progress-text").textContent = text;
  byId("progress-box").hidden = false;
}

function applyStatus(status) {
  const badge = byId("status-badge");
  if (STATUS_LABELS.has(status.status)) {
    badge.className = `badge badge-${status.status}`;
    badge.textContent = STATUS_LABELS.get(status.status);
  }
  setTime("started_at", status.started_at);
  setTime("finished_at", status.finished_at);
  startedAt = status.started_at;
  lineCount = status.line_count;
  showLineCount();
  durationBase = status.duration;
  durationAt = performance.now();
  const ending = status.finished && !finished;
  finished = finished || status.finished;
  runStatus = status.status;
  showDuration();
  tick(!status.finished && status.started_at !== null);
  const error = byId("error");
  error.textContent = status.error || "";
  error.hidden = !status.error;
  applyProgress(status.progress);
  for (const id of ["cancelled-by-label", "cancelled-by"]) byId(id).hidden = !status.cancel_requested;
  byId("cancelled-by").textContent = status.cancelled_by || "—";
  const cancel = byId("cancel-form");
  if (cancel) {
    cancel.hidden = status.finished;
    if (status.cancel_requested) {
      cancel.querySelector("button").disabled = true;
      cancel.querySelector("button").textContent = "Cancelling…";
    }
  }
  if (status.finished) byId("follow-text")?.remove();
  // Sections still open at the end of a successful run are done; after a failure or a
  // cancel they stay open, where the run stopped.
  if (ending) for (const section of [...stoppedIn, ...chainOf(liveSection)]) applyFold(section);
}

// --- The live stream -----------------------------------------------------------------------

// A browser opens few connections to a server (6 over HTTP/1.1) and a server serves a bounded
// number of streams: a tab hidden this long gives its stream back, and takes a new one from
// its last line when shown again. A quick look at another tab keeps it.
const HIDDEN_RELEASE_MS = 3000;
const LIVE_TEXT = {
  live: "Live",
  reconnecting: "Reconnecting…",
  waiting: "Waiting for a free stream…",
  paused: "Paused while hidden",
};
let hiddenTimer = 0;
let released = false; // the stream was given back while the tab is hidden
let attempt = 0; // counts streams opened and dropped: an answer to an older one is ignored
let probe = null; // the request asking why a stream was refused

function setLive(state) {
  liveBadge.hidden = state === null;
  liveBadge.textContent = LIVE_TEXT[state] ?? "";
  for (const name of Object.keys(LIVE_TEXT)) liveBadge.classList.toggle(name, name === state);
}

// Drops the stream, and whatever was about to open another one.
function stopStream() {
  attempt++;
  source?.close();
  source = null;
  clearTimeout(retryTimer);
  retryTimer = 0;
  probe?.abort();
  probe = null;
}

function finish() {
  finished = true;
  stopStream();
  clearTimeout(hiddenTimer);
  tick(false);
  setLive(null);
  followButton.textContent = "↓ Jump to end";
}

// Batches of lines per event (`lines`); one line per event (`message`) without.
const streamUrl = () => `${data.eventsUrl}?offset=${received()}${data.batch === "true" ? "&batch=1" : ""}`;

function connect() {
  stopStream();
  source = new EventSource(streamUrl());
  source.addEventListener("open", () => {
    retryDelay = RETRY_FIRST_MS;
    setLive("live");
  });
  source.addEventListener("lines", receiveBatch);
  source.addEventListener("message", (event) => receive([JSON.parse(event.data)]));
  source.addEventListener("status", (event) => applyStatus(JSON.parse(event.data)));
  source.addEventListener("progress", (event) => applyProgress(JSON.parse(event.data)));
  source.addEventListener("done", (event) => {
    // The final status is shown with every line: the last ones are drawn now, not a frame later.
    if (pending.length || unparsed.length) drawPending(FRAME_BUDGET_MS, true);
    applyStatus(JSON.parse(event.data));
    finish();
  });
  source.addEventListener("error", () => {
    if (!source) return;
    setLive("reconnecting");
    // CONNECTING: the browser reconnects by itself (with Last-Event-ID). CLOSED: it gave
    // up (an error status, or 204 for a run that ended meanwhile): we take over.
    if (source.readyState === EventSource.CLOSED) {
      source = null;
      whyClosed(attempt);
    }
  });
}

function retryLater(ms, state) {
  setLive(state);
  retryTimer = setTimeout(recover, ms);
}

// Seconds of a Retry-After header: a number of seconds or an HTTP date; null if neither.
function retryAfter(value) {
  if (value === null) return null;
  if (/^\s*\d+\s*$/.test(value)) return Number(value);
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, (at - Date.now()) / 1000);
}

// EventSource does not say why it gave up. The same request made with fetch, and dropped at
// its headers, tells a server with no stream to spare (503, with when to come back in
// Retry-After) from one that is restarting or unreachable (backoff). Random spread keeps the
// tabs refused together from all coming back together.
async function whyClosed(ticket) {
  probe = new AbortController();
  let response = null;
  try {
    response = await fetch(streamUrl(), {
      headers: { Accept: "text/event-stream" },
      credentials: "same-origin",
      signal: probe.signal,
    });
  } catch {
    // Unreachable, or dropped meanwhile.
  }
  if (ticket !== attempt) return;
  probe.abort();
  probe = null;
  const seconds = response?.status === 503 ? retryAfter(response.headers.get("Retry-After")) : null;
  if (seconds !== null) {
    retryLater(seconds * 1000 * (1 + Math.random() / 2), "waiting");
  } else {
    retryLater(retryDelay * (0.5 + Math.random() / 2), "reconnecting");
    retryDelay = Math.min(retryDelay * 2, RETRY_MAX_MS);
  }
}

// Asks how the run is before opening a new stream: a run that ended while the stream was
// down only needs the lines still missing, if any.
async function recover() {
  const ticket = attempt;
  let status = null;
  try {
    const response = await fetch(data.statusUrl, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    if (response.ok) status = await response.json();
  } catch {
    // Network still down: try the stream again, which the retry delay spaces out.
  }
  if (ticket !== attempt || finished) return; // hidden, or finished, meanwhile
  // A run that ended with lines still missing: the stream brings them, then its final status.
  if (status && !(status.finished && received() < status.line_count)) applyStatus(status);
  if (status && status.finished && received() >= status.line_count) finish();
  else connect();
}

function release() {
  stopStream();
  released = true;
  setLive("paused");
}

document.addEventListener("visibilitychange", () => {
  clearTimeout(hiddenTimer);
  if (finished) return;
  if (document.hidden) {
    hiddenTimer = setTimeout(release, HIDDEN_RELEASE_MS);
  } else if (released) {
    released = false;
    setLive("reconnecting");
    recover();
  }
});

// Cancel without leaving the page; the form still works as a plain POST without JavaScript.
byId("cancel-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  form.querySelector("button").disabled = true;
  try {
    const response = await fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    // 202: cancel requested; 409: the run had already finished. Both answer the status.
    if (response.status !== 202 && response.status !== 409) throw new Error(String(response.status));
    applyStatus(await response.json());
  } catch {
    form.submit(); // let the server answer the plain form (and show why it failed)
  }
});

// --- Start -------------------------------------------------------------------------------------

// The server drew the tail as plain text; it is drawn again from its lines, with colours,
// sections and the options.
function serverLines() {
  const zero = Date.parse(log.dataset.timeZero);
  const offsets = log.dataset.timeOffsets.split(",");
  return Array.from(log.children, (row, index) => ({
    n: Number(row.querySelector(".ln").textContent),
    stream: /\bstream-(\w+)/.exec(row.className)?.[1] ?? "stdout",
    t: new Date(zero + Number(offsets[index])).toISOString(),
    text: row.querySelector(".tx").textContent,
  }));
}

const initial = serverLines();
log.replaceChildren();
if (initial.length) {
  const above = sectionAbove(initial[0].n);
  liveSection = parse(initial, above.open);
  noteStops(initial);
  tailExact = above.exact;
  latestTime = initial.at(-1).t;
  log.append(fragmentOf(initial));
  applyEnded();
}
page.classList.add("js");
for (const id of ["search", "log-options"]) byId(id).hidden = false;
updateEarlier();
showLineCount();
const target = hashLine();
scrollToEnd();
if (target !== null) goToLine(target);
if (!finished) {
  tick(durationBase !== null);
  // A tab opened in the background takes its stream once it is first shown.
  if (document.hidden) release();
  else connect();
}
