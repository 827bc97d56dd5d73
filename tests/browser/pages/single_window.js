// The browser tier's Single Window page script, written from docs/gateway.md alone.
//
// It behaves as Single Window page scripts do with the E-port client service: the URL is chosen
// from the page (ws://127.0.0.1:61232 on plain-http pages, wss://wss.singlewindow.cn:61231 on
// every other page), nothing is sent before the greeting, a method name has at most one request
// in flight (a second call of the same method waits for the first answer) and replies are
// matched by `_method`, as the official library's callbacks are.
//
// The test gives the page a script of calls (GET /script?run=ID on the page's own server) and
// receives every reply, in order, by POST /report?run=ID. A step's argument may take a value
// from an earlier reply: {"$reply": "<step name>", "index": N} is that reply's Data[N].
(function () {
  "use strict";

  const PREFIX = "cus-sec_";
  const GREETING_WAIT_MS = 10000;
  const SECRET_ARGS = ["passwd", "oldPin", "newPin"];
  const run = new URLSearchParams(location.search).get("run") || "";
  const logElement = document.getElementById("log");

  function show(text) {
    logElement.textContent += text + "\n";
  }

  // Reports go out one at a time, so the test receives them in the order they happened.
  let reporting = Promise.resolve();
  function report(entry) {
    reporting = reporting.then(() => fetch("/report?run=" + encodeURIComponent(run), {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(entry),
    })).catch((error) => show("report failed: " + error));
    return reporting;
  }

  function gatewayUrl() {
    return location.protocol === "http:" ? "ws://127.0.0.1:61232"
      : "wss://wss.singlewindow.cn:61231";
  }

  // The arguments as the page sends them, with the PIN fields blanked for the report.
  function withoutSecrets(args) {
    const copy = {};
    for (const [key, value] of Object.entries(args || {})) {
      copy[key] = SECRET_ARGS.includes(key) ? "(secret)" : value;
    }
    return copy;
  }

  class CardService {
    constructor(url) {
      this.url = url;
      this.socket = null;
      this.nextId = 1;
      this.waiting = new Map();  // full method name -> {resolve, reject}
      this.queues = new Map();   // full method name -> the promise of its last call
    }

    // Resolves with the greeting; rejects when the socket fails or closes before it.
    open() {
      return new Promise((resolve, reject) => {
        let greeted = false;
        const timer = setTimeout(() => {
          reject({phase: "greeting", reason: "no greeting within " + GREETING_WAIT_MS + " ms"});
        }, GREETING_WAIT_MS);
        let socket;
        try {
          socket = new WebSocket(this.url);
        } catch (error) {
          clearTimeout(timer);
          reject({phase: "construct", reason: String(error)});
          return;
        }
        this.socket = socket;
        socket.onerror = () => {
          if (!greeted) {
            clearTimeout(timer);
            reject({phase: "handshake", reason: "websocket error"});
          }
        };
        socket.onclose = (event) => {
          clearTimeout(timer);
          if (!greeted) {
            reject({phase: "handshake", reason: "closed", code: event.code});
          }
          for (const [, pending] of this.waiting) {
            pending.reject({reason: "closed", code: event.code});
          }
          this.waiting.clear();
          report({type: "closed", code: event.code, reason: event.reason});
        };
        socket.onmessage = (event) => {
          let message;
          try {
            message = JSON.parse(event.data);
          } catch (error) {
            report({type: "unparsable", text: String(event.data).slice(0, 2000)});
            return;
          }
          if (!greeted) {
            if (message._method === "open") {
              greeted = true;
              clearTimeout(timer);
              resolve(message);
            } else {
              report({type: "before-greeting", message: message});
            }
            return;
          }
          const pending = this.waiting.get(message._method);
          if (pending === undefined) {
            report({type: "unexpected", message: message});
            return;
          }
          this.waiting.delete(message._method);
          pending.resolve(message);
        };
      });
    }

    // One request per method name at a time: a call waits for the previous one of its name.
    call(method, args) {
      const full = PREFIX + method;
      const previous = this.queues.get(full) || Promise.resolve();
      const result = previous.catch(() => undefined).then(() => this.send(full, args));
      this.queues.set(full, result);
      return result;
    }

    send(full, args) {
      const id = this.nextId++;
      return new Promise((resolve, reject) => {
        this.waiting.set(full, {resolve: (reply) => resolve({reply, id}), reject});
        const request = {_method: full, _id: id};
        if (args !== undefined) {
          request.args = args;
        }
        this.socket.send(JSON.stringify(request));
      });
    }
  }

  function resolveArgs(args, replies) {
    if (args === undefined) {
      return undefined;
    }
    const resolved = {};
    for (const [key, value] of Object.entries(args)) {
      if (value !== null && typeof value === "object" && "$reply" in value) {
        const earlier = replies.get(value.$reply);
        if (earlier === undefined) {
          throw new Error("step " + value.$reply + " has no reply to take " + key + " from");
        }
        resolved[key] = earlier._args.Data[value.index || 0];
      } else {
        resolved[key] = value;
      }
    }
    return resolved;
  }

  async function runStep(service, step, replies) {
    const args = resolveArgs(step.args, replies);
    const started = performance.now();
    const {reply, id} = await service.call(step.method, args);
    replies.set(step.name, reply);
    show(step.name + ": " + (reply._args && reply._args.Result));
    await report({
      type: "reply", name: step.name, method: step.method, id: id, args: withoutSecrets(args),
      reply: reply, ms: Math.round(performance.now() - started),
    });
  }

  async function runScript(url, steps) {
    const service = new CardService(url);
    let greeting;
    try {
      greeting = await service.open();
    } catch (failure) {
      await report(Object.assign({type: "connect-failed", url: url}, failure));
      return;
    }
    await report({type: "greeting", url: url, message: greeting});
    const replies = new Map();
    for (const step of steps) {
      // A group runs at once; its calls of one method name still go one after another.
      const group = step.parallel || [step];
      await Promise.all(group.map((member) => runStep(service, member, replies)));
    }
  }

  async function main() {
    const script = await (await fetch("/script?run=" + encodeURIComponent(run))).json();
    const url = gatewayUrl();
    await report({type: "page", origin: location.origin, url: url});
    // A script may name other URLs to try (what a hostile page would do); normally the page
    // uses the one URL its scheme calls for.
    for (const target of script.urls || [url]) {
      await runScript(target, script.steps);
    }
    await report({type: "done"});
  }

  window.addEventListener("error", (event) => {
    report({type: "page-error", message: String(event.message)});
  });
  main().catch((error) => {
    report({type: "page-error", message: String(error && (error.stack || error.reason) || error)})
      .then(() => report({type: "done"}));
  });
})();
