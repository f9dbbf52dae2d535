// The job page: follows a running job's log over Server-Sent Events, loads earlier lines
// on demand, keeps the #L<n> line of the URL highlighted, and keeps the facts (status,
// times, progress) current. Job output is untrusted: it reaches the DOM only through
// textContent, never as HTML.
"use strict";

(() => {
  const page = document.getElementById("job");
  if (!page) return;

  const MAX_LIVE_LINES = 5000; // lines kept in the DOM while following a live tail
  const MAX_LINES_READING = 20000; // while the user reads above the tail (still bounded)
  const PAGE_LINES = 2000; // lines per "Show earlier lines"
  const FETCH_LIMIT = 5000; // the lines endpoint's maximum per request
  // A #L target at most this far above the shown lines is loaded with every line between;
  // farther, as a window around it and a gap marker.
  const FILL_LIMIT = 10000;
  const TARGET_CONTEXT = 50; // lines shown above a #L target that had to be loaded
  const BOTTOM_SLACK = 24; // pixels from the end that still count as "at the bottom"
  const RETRY_FIRST_MS = 2000;
  const RETRY_MAX_MS = 60000;
  const STREAMS = new Set(["stdout", "stderr", "log", "system"]);
  const STATUSES = new Set(["queued", "running", "succeeded", "failed", "cancelled", "lost"]);

  const byId = (id) => document.getElementById(id);
  const log = byId("log");
  const scroller = byId("log-scroll");
  const followButton = byId("follow");
  const earlier = byId("earlier");
  const earlierText = byId("earlier-text");
  const earlierButton = byId("earlier-button");
  const liveBadge = byId("live");
  const data = page.dataset;

  let beforeFirst = Number(data.beforeTail); // lines above the first one in the DOM
  let last = Number(data.last); // the highest line number received
  let finished = data.finished === "true";
  let following = true;
  let pending = [];
  let frame = 0;
  let source = null;
  let retryTimer = 0;
  let retryDelay = RETRY_FIRST_MS;
  let loadingEarlier = false;

  // --- Formatting, the same as the server's ------------------------------------------------

  const plural = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;
  const formatNumber = (value) => (Number.isInteger(value) ? String(value) : value.toFixed(2));

  function formatDuration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const value = Math.max(seconds, 0);
    if (value < 60) return `${value.toFixed(1)} s`;
    const whole = Math.floor(value);
    const pad = (n) => String(n).padStart(2, "0");
    if (whole < 3600) return `${Math.floor(whole / 60)} min ${pad(whole % 60)} s`;
    return `${Math.floor(whole / 3600)} h ${pad(Math.floor((whole % 3600) / 60))} min`;
  }

  // Times are shown in the server's time zone, as the server renders them.
  let dateFormat;
  try {
    dateFormat = new Intl.DateTimeFormat("en-CA", {
      timeZone: data.timeZone || undefined,
      year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
    });
  } catch {
    dateFormat = new Intl.DateTimeFormat("en-CA", { dateStyle: "short", timeStyle: "medium", hourCycle: "h23" });
  }

  function formatTime(iso) {
    const parts = {};
    for (const part of dateFormat.formatToParts(new Date(iso))) parts[part.type] = part.value;
    return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second}`;
  }

  // --- Lines -----------------------------------------------------------------------------

  function lineElement(line) {
    const row = document.createElement("div");
    row.className = `line stream-${STREAMS.has(line.stream) ? line.stream : "stdout"}`;
    const number = document.createElement("a");
    number.className = "ln";
    number.id = `L${line.n}`;
    number.href = `#L${line.n}`;
    number.textContent = String(line.n);
    const text = document.createElement("span");
    text.className = "tx";
    text.textContent = line.text;
    row.append(number, text);
    return row;
  }

  function fragmentOf(lines) {
    const fragment = document.createDocumentFragment();
    for (const line of lines) fragment.append(lineElement(line));
    return fragment;
  }

  const atBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight <= BOTTOM_SLACK;
  const scrollToEnd = () => { scroller.scrollTop = scroller.scrollHeight; };

  function setFollowing(on) {
    following = on;
    followButton.hidden = on;
  }

  // Runs a DOM change above the viewport without moving what the user is looking at. The
  // browser's scroll anchoring does that too, except at the very top (scrollTop 0): whatever
  // it did, the last line is put back where it was.
  function keepingView(change) {
    const reference = log.lastElementChild;
    const before = reference?.getBoundingClientRect().top;
    change();
    if (reference) scroller.scrollTop += reference.getBoundingClientRect().top - before;
  }

  function updateEarlier() {
    earlier.hidden = beforeFirst <= 0;
    const next = Math.min(beforeFirst, PAGE_LINES);
    earlierText.textContent = `${plural(beforeFirst, "earlier line")} not shown.`;
    earlierButton.textContent = `Show ${plural(next, "earlier line")}`;
    earlierButton.hidden = false;
  }

  // A live line: queued, and appended with the others of the same frame in one go.
  function receive(line) {
    if (line.n <= last) return; // already shown: a replay after a reconnect
    last = line.n;
    pending.push(line);
    // No frame comes while the tab is hidden: keep no more than a flush would show.
    if (pending.length >= 2 * MAX_LINES_READING) pending = pending.slice(-MAX_LINES_READING);
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function flush() {
    frame = 0;
    const limit = following ? MAX_LIVE_LINES : MAX_LINES_READING;
    // Lines that the trim below would drop at once are never built.
    const batch = pending.length > limit ? pending.slice(-limit) : pending;
    pending = [];
    byId("log-empty")?.remove();
    log.append(fragmentOf(batch));
    trim(limit);
    if (following) scrollToEnd();
  }

  // Drops the oldest lines past `limit`, so that a long live tail keeps the page responsive.
  function trim(limit) {
    const excess = log.childElementCount - limit;
    if (excess <= 0) return;
    const drop = () => {
      const range = document.createRange();
      range.setStart(log, 0);
      range.setEndBefore(log.children[excess]);
      range.deleteContents();
      // A gap marker with no lines above it is meaningless.
      while (log.firstElementChild && !log.firstElementChild.classList.contains("line")) {
        log.firstElementChild.remove();
      }
      const first = log.querySelector(".ln");
      beforeFirst = first ? Number(first.id.slice(1)) - 1 : last;
      updateEarlier();
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

  // Puts stored lines from..beforeFirst above the shown ones, without moving the view.
  async function loadAbove(from) {
    const lines = await fetchRange(from, beforeFirst);
    keepingView(() => {
      log.prepend(fragmentOf(lines));
      beforeFirst = from - 1;
      updateEarlier();
    });
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

  // A line far above the shown ones: a window around it, then a marker for the lines between.
  async function loadWindow(n) {
    const from = Math.max(1, n - TARGET_CONTEXT);
    const to = Math.min(beforeFirst, from + PAGE_LINES - 1);
    const lines = await fetchRange(from, to);
    const gap = document.createElement("div");
    gap.className = "log-gap";
    const raw = document.createElement("a");
    raw.href = data.rawUrl;
    raw.textContent = "raw log";
    gap.append(`Lines ${to + 1}–${beforeFirst} are not shown here; see the `, raw, ".");
    keepingView(() => {
      log.prepend(fragmentOf(lines), gap);
      beforeFirst = from - 1;
      updateEarlier();
    });
  }

  // --- #L<n>: the permalink of a line -----------------------------------------------------

  function hashLine() {
    const match = /^#L(\d+)$/.exec(location.hash);
    return match ? Number(match[1]) : null;
  }

  function highlight(n) {
    for (const row of log.querySelectorAll(".line.highlight")) row.classList.remove("highlight");
    byId(`L${n}`)?.parentElement.classList.add("highlight");
  }

  async function goToLine(n) {
    if (!byId(`L${n}`) && n >= 1 && n <= beforeFirst) {
      try {
        if (beforeFirst - n < FILL_LIMIT) await loadAbove(Math.max(1, n - TARGET_CONTEXT));
        else await loadWindow(n);
      } catch (error) {
        earlierText.textContent = `Could not load line ${n} (${error.message}).`;
      }
    }
    const target = byId(`L${n}`);
    if (!target) return;
    highlight(n);
    setFollowing(false);
    target.parentElement.scrollIntoView({ block: "center" });
  }

  log.addEventListener("click", (event) => {
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

  followButton.addEventListener("click", () => {
    setFollowing(true);
    scrollToEnd();
  });

  earlierButton.addEventListener("click", showEarlier);

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
    if (STATUSES.has(status.status)) {
      badge.className = `badge badge-${status.status}`;
      badge.textContent = status.status.charAt(0).toUpperCase() + status.status.slice(1);
    }
    setTime("started_at", status.started_at);
    setTime("finished_at", status.finished_at);
    byId("line-count").textContent = String(status.line_count);
    durationBase = status.duration;
    durationAt = performance.now();
    finished = finished || status.finished;
    showDuration();
    tick(!status.finished && status.started_at !== null);
    const error = byId("error");
    error.textContent = status.error || "";
    error.hidden = !status.error;
    applyProgress(status.progress);
    const cancel = byId("cancel-form");
    if (cancel) {
      cancel.hidden = status.finished;
      if (status.cancel_requested) {
        cancel.querySelector("button").disabled = true;
        cancel.querySelector("button").textContent = "Cancelling…";
      }
    }
    if (status.finished) byId("follow-text")?.remove();
  }

  // --- The live stream -----------------------------------------------------------------------

  function setLive(state) {
    liveBadge.hidden = state === null;
    liveBadge.textContent = state === "live" ? "Live" : "Reconnecting…";
    liveBadge.classList.toggle("reconnecting", state === "reconnecting");
  }

  function finish() {
    finished = true;
    source?.close();
    source = null;
    clearTimeout(retryTimer);
    tick(false);
    setLive(null);
    followButton.textContent = "↓ Jump to end";
  }

  function connect() {
    clearTimeout(retryTimer);
    source?.close();
    source = new EventSource(`${data.eventsUrl}?offset=${last}`);
    source.addEventListener("open", () => {
      retryDelay = RETRY_FIRST_MS;
      setLive("live");
    });
    source.addEventListener("message", (event) => receive(JSON.parse(event.data)));
    source.addEventListener("status", (event) => applyStatus(JSON.parse(event.data)));
    source.addEventListener("progress", (event) => applyProgress(JSON.parse(event.data)));
    source.addEventListener("done", (event) => {
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
        retryTimer = setTimeout(recover, retryDelay);
        retryDelay = Math.min(retryDelay * 2, RETRY_MAX_MS);
      }
    });
  }

  // Asks how the run is before opening a new stream: a run that ended while the stream was
  // down only needs the lines still missing, if any.
  async function recover() {
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
    if (status) applyStatus(status);
    if (status && status.finished && last >= status.line_count) finish();
    else connect();
  }

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

  page.classList.add("js");
  updateEarlier();
  const target = hashLine();
  scrollToEnd();
  if (target !== null) goToLine(target);
  if (!finished) {
    tick(durationBase !== null);
    connect();
  }
})();
