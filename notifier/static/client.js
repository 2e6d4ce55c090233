// notifier's browser helper: an ES module with no dependencies, served by notifier at /v1/client.js.
//
//   import { connect } from "/v1/client.js";          // or "/realtime/v1/client.js" under a prefix
//   const notifier = connect({ topics: ["orders:42"] });
//   notifier.on("order.shipped", (event) => show(event.data));   // any event type; "*" for all
//   notifier.on("reset", ({ notifications }) => redraw(notifications));
//
// What it does for the page:
// - streams with the browser's cookie (notifier's HttpOnly token or the host's session), or with a
//   single-use ticket (`ticket: async () => "..."`, or `ticketUrl` + `ticketHeaders`);
// - keeps the last event id in localStorage and resumes from it (`?last_event_id=`), so a page that
//   posts, redirects and reloads misses nothing published in between;
// - on `event: reset` (the server could not resume) refetches /v1/notifications and hands the page
//   that list; the stream itself goes on from where the server reset it;
// - shares one connection between the tabs of a browser: the tab holding a Web Lock is the leader
//   and streams, the others get every event over a BroadcastChannel; when the leader closes, the
//   lock passes to another tab, which resumes from the stored id (browsers allow six HTTP/1.1
//   connections per host: one stream per tab would starve a user with many tabs);
// - reconnects after the server's `retry:` (which it jitters when it drains), backing off with
//   jitter after failures, and waits for `reconnect()` after a 401 (signed out).
//
// Why fetch() and not EventSource: EventSource hides the `retry:` value, the response status (a
// 401 and a network failure look the same, and it retries a 401 forever) and cannot send a ticket
// it must first obtain. The stream and its format are the same.

const MAX_DELAY_MS = 30000;
const DEFAULT_RETRY_MS = 3000;

export function parseId(id) {
  const match = /^(\d+)-(\d+)$/.exec(id || "");
  return match ? [Number(match[1]), Number(match[2])] : null;
}

export function newer(a, b) {
  // True when event id `a` comes after `b` (ids are ordered across all channels); no `b`: true.
  const x = parseId(a), y = parseId(b);
  if (!x) return false;
  if (!y) return true;
  return x[0] > y[0] || (x[0] === y[0] && x[1] > y[1]);
}

export function backoff(retryMs, failures, random = Math.random) {
  // The server's retry after a clean end; after failures, doubling up to 30 s, each wait
  // between half and all of it so that many clients spread out.
  if (failures <= 0) return retryMs;
  const ceiling = Math.min(MAX_DELAY_MS, retryMs * 2 ** failures);
  return Math.round(ceiling * (0.5 + random() / 2));
}

// One SSE stream's parser (the HTML spec's rules: lines end with CRLF, LF or CR).
export class SSEParser {
  constructor(onEvent, onRetry) {
    this.onEvent = onEvent;
    this.onRetry = onRetry;
    this.buffer = "";
    this.reset();
  }
  reset() { this.data = []; this.type = ""; this.id = null; }
  feed(text) {
    let input = this.buffer + text;
    // A CR at the very end may be the first half of a CRLF: wait for the next chunk.
    const hold = input.endsWith("\r") ? "\r" : "";
    if (hold) input = input.slice(0, -1);
    const lines = input.split(/\r\n|\r|\n/);
    this.buffer = lines.pop() + hold;   // an unfinished line
    for (const line of lines) this.line(line);
  }
  line(line) {
    if (line === "") {
      if (this.data.length) this.onEvent({ type: this.type || "message", id: this.id, data: this.data.join("\n") });
      this.reset();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.type = value;
    else if (field === "id" && !value.includes("\0")) this.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.onRetry(Number(value));
  }
}

function defaultBase() {
  return new URL(".", import.meta.url).href.replace(/\/v1\/$/, "");
}

function csrfHeaders() {
  // flask-jwt-extended's double-submit cookie, when the page has one (notifier's own cookie auth).
  const match = /(?:^|;\s*)csrf_access_token=([^;]+)/.exec(document.cookie || "");
  return match ? { "X-CSRF-TOKEN": decodeURIComponent(match[1]) } : {};
}

export class Notifier {
  constructor(options = {}) {
    this.base = (options.base || defaultBase()).replace(/\/$/, "");
    this.topics = options.topics || [];
    this.options = options;
    this.key = options.storageKey || `notifier:${this.base}:${this.topics.join(",")}`;
    this.listeners = new Map();
    this.seen = this.storedId();   // this tab has shown everything up to here
    this.retryMs = DEFAULT_RETRY_MS;
    this.failures = 0;
    this.status = "starting";
    this.role = "follower";
    this.closed = false;
    this.wake = null;              // ends the current wait or stream (reconnect, close)
    // The events this tab stored lately: [{ id, before, at }]. One that arrived moments before the
    // page was left (a form post that redirects) was not really seen: see rewind().
    this.recent = [];
    this.graceMs = options.graceMs ?? 2000;
    addEventListener("pagehide", () => this.rewind());
    const sharing = options.share !== false && typeof BroadcastChannel === "function" && navigator.locks;
    if (sharing) {
      this.channel = new BroadcastChannel(this.key);
      this.channel.onmessage = (message) => this.fromLeader(message.data);
      this.release = new Promise((resolve) => { this.releaseLock = resolve; });
      navigator.locks.request(this.key, () => this.lead());
      this.channel.postMessage({ kind: "hello" });   // the leader answers with its status
    } else {
      this.lead();
    }
  }

  // -- what the page uses --------------------------------------------------------------------

  on(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(listener);
    return () => this.listeners.get(type).delete(listener);
  }

  get lastEventId() { return this.storedId(); }

  reconnect() {
    // Try now (after a sign-in, say). A follower asks the leader.
    if (this.role === "leader") { this.failures = 0; this.interrupt(); }
    else if (this.channel) this.channel.postMessage({ kind: "reconnect" });
  }

  close() {
    this.closed = true;
    this.interrupt();
    if (this.releaseLock) this.releaseLock();
    if (this.channel) this.channel.close();
  }

  async notifications(params = {}) {
    const query = new URLSearchParams(params).toString();
    const response = await fetch(`${this.base}/v1/notifications${query ? "?" + query : ""}`,
      { credentials: "include", cache: "no-store" });
    if (!response.ok) throw new Error(`notifications: HTTP ${response.status}`);
    return response.json();
  }

  async markRead(upTo) {
    // Everything up to this id is read; every tab and device of the user hears `read`.
    const body = Array.isArray(upTo) ? { ids: upTo } : { up_to: upTo };
    const response = await fetch(`${this.base}/v1/notifications/read`, {
      method: "POST", credentials: "include", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", ...csrfHeaders() },
    });
    if (!response.ok) throw new Error(`read: HTTP ${response.status}`);
    return response.json();
  }

  // -- dispatch -------------------------------------------------------------------------------

  emit(type, detail) {
    for (const key of [type, "*"]) {
      if (key === "*" && (type === "status" || type === "reset")) continue;
      for (const listener of this.listeners.get(key) || []) {
        try { listener(detail); } catch (error) { console.error(error); }
      }
    }
  }

  deliver(event) {
    // Once per tab, in id order: a new leader's replay repeats what followers already showed.
    if (event.id && !newer(event.id, this.seen)) return;
    if (event.id) this.seen = event.id;
    this.emit(event.type, event);
  }

  setStatus(status) {
    this.status = status;
    this.emit("status", status);
    if (this.role === "leader" && this.channel) this.channel.postMessage({ kind: "status", status });
  }

  fromLeader(message) {
    if (message.kind === "event") this.deliver(message.event);
    else if (message.kind === "reset") { this.seen = message.detail.resume_from; this.emit("reset", message.detail); }
    else if (message.kind === "status" && this.role !== "leader") { this.status = message.status; this.emit("status", message.status); }
    else if (message.kind === "reconnect" && this.role === "leader") this.reconnect();
    else if (message.kind === "hello" && this.role === "leader") this.channel.postMessage({ kind: "status", status: this.status });
  }

  // -- the leader's stream --------------------------------------------------------------------

  storedId() {
    try { return localStorage.getItem(this.key + ":last-id"); } catch { return null; }
  }

  storeId(id) {
    try { localStorage.setItem(this.key + ":last-id", id); } catch { /* private mode: this page only */ }
  }

  rewind() {
    // Leaving the page: what arrived in its last `graceMs` is shown again by the next page (it
    // resumes from before it). Without this, the notification a form post causes reaches the page
    // being left, just before the redirect, and the page the user then sees misses it.
    if (this.role !== "leader") return;
    const cutoff = Date.now() - this.graceMs;
    const fresh = this.recent.find((entry) => entry.at > cutoff);
    if (fresh && fresh.before) this.storeId(fresh.before);
  }

  interrupt() {
    if (this.wake) this.wake();
  }

  async lead() {
    this.role = "leader";
    const stored = this.storedId();
    if (stored && newer(stored, this.seen)) this.seen = stored;
    while (!this.closed) {
      const ended = await this.streamOnce();
      if (this.closed) break;
      if (ended === "unauthorized") {
        this.setStatus("unauthorized");
        await this.pause(Infinity);          // until reconnect() or close()
        continue;
      }
      const delay = backoff(this.retryMs, this.failures);
      this.setStatus("waiting");
      await this.pause(delay);
    }
    return this.release;                      // holds the lock until close()
  }

  pause(ms) {
    return new Promise((resolve) => {
      const timer = ms === Infinity ? null : setTimeout(resolve, ms);
      this.wake = () => { clearTimeout(timer); resolve(); };
    });
  }

  async streamUrl() {
    const params = new URLSearchParams();
    const ticket = await this.ticket();
    if (ticket) params.set("ticket", ticket);
    else for (const topic of this.topics) params.append("topic", topic);
    const last = this.storedId() || await this.startingPoint();
    if (last) params.set("last_event_id", last);
    const query = params.toString();
    return `${this.base}/v1/events${query ? "?" + query : ""}`;
  }

  async startingPoint() {
    // The first stream of this browser: start from the server's current position rather than
    // "now" as the stream sees it, and remember it at once, so an event published while this
    // page posts, redirects and reloads is replayed to the next page.
    try {
      let position = (await this.notifications({ limit: 1 })).resume_from;
      if (position === "0-0") position = null;   // nothing was ever published: nothing to resume
      if (position) { this.storeId(position); if (newer(position, this.seen)) this.seen = position; }
      return position;
    } catch {
      return null;                            // signed out, say: the stream will tell
    }
  }

  async ticket() {
    const { ticket, ticketUrl, ticketHeaders } = this.options;
    if (ticket) return ticket();
    if (!ticketUrl) return null;
    const headers = typeof ticketHeaders === "function" ? await ticketHeaders() : ticketHeaders || {};
    const response = await fetch(ticketUrl, {
      method: "POST", credentials: "include", body: JSON.stringify({ topics: this.topics }),
      headers: { "Content-Type": "application/json", ...headers },
    });
    if (!response.ok) throw new Error(`stream ticket: HTTP ${response.status}`);
    return (await response.json()).ticket;
  }

  async streamOnce() {
    const abort = new AbortController();
    this.wake = () => abort.abort();
    this.setStatus("connecting");
    try {
      const response = await fetch(await this.streamUrl(), {
        credentials: "include", cache: "no-store", signal: abort.signal, headers: { Accept: "text/event-stream" },
      });
      if (response.status === 401) return "unauthorized";
      if (!response.ok || !response.body) { this.failures += 1; return "failed"; }
      this.failures = 0;
      this.setStatus("open");
      const parser = new SSEParser((event) => this.fromStream(event), (ms) => { this.retryMs = ms; });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return "ended";
        parser.feed(value);
      }
    } catch (error) {
      if (!abort.signal.aborted) this.failures += 1;
      return "failed";
    }
  }

  fromStream(event) {
    let data = event.data;
    try { data = JSON.parse(event.data); } catch { /* not JSON: passed on as text */ }
    const parsed = { type: event.type, id: event.id, data };
    if (event.type === "reset") { this.onReset(parsed); return; }
    if (event.id) {                           // before telling anyone: a new leader resumes after it
      this.recent.push({ id: event.id, before: this.storedId(), at: Date.now() });
      if (this.recent.length > 100) this.recent.shift();
      this.storeId(event.id);
    }
    this.deliver(parsed);
    if (this.channel) this.channel.postMessage({ kind: "event", event: parsed });
  }

  async onReset(event) {
    // The server could not resume from our id: it moved the stream on to `resume_from` (the frame's
    // id). What was missed is in the user's recent notifications.
    const resumeFrom = event.data.resume_from || event.id;
    this.storeId(resumeFrom);
    this.seen = resumeFrom;
    let notifications = [];
    try { notifications = (await this.notifications()).notifications; } catch (error) { console.error(error); }
    const detail = { reason: event.data.reason, resume_from: resumeFrom, notifications };
    this.emit("reset", detail);
    if (this.channel) this.channel.postMessage({ kind: "reset", detail });
  }
}

export function connect(options) {
  return new Notifier(options);
}
