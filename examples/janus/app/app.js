// The demo page: a small Janus REST client (create a session, attach a plugin, exchange
// SDP, long-poll for events) and one RTCPeerConnection that may only use relayed
// candidates from Turnpike. `window.demo` exposes its state and stats to a test harness.
//
//   ?mode=echotest               send camera and microphone, get them back from Janus
//   ?mode=publish&room=1234      publish into a VideoRoom
//   ?mode=subscribe&room=1234    receive the first publisher of the room
//   &policy=all                  allow host candidates too (default: relay only)
//   &timeout=10                  seconds after the offer before giving up on ICE
"use strict";

const params = new URLSearchParams(location.search);
const mode = params.get("mode") || "echotest";
const room = Number(params.get("room") || 1234);
const demo = (window.demo = {
  mode, state: "starting", error: null, candidateErrors: [],
  iceConnectedMs: null, startedAt: performance.now(),
});
document.getElementById("mode").textContent = mode;

// Milliseconds since the page started, per step: where the time to connect goes.
demo.marks = {};
function mark(name) {
  demo.marks[name] = Math.round(performance.now() - demo.startedAt);
}

function setState(s, error) {
  demo.state = s;
  if (error) demo.error = String(error);
  document.getElementById("status").textContent = error ? `${s}: ${error}` : s;
}

let txn = 0;
async function janus(path, body) {
  const r = await fetch(`/janus${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ...body, transaction: `t${++txn}` }),
  });
  const msg = await r.json();
  if (msg.janus === "error") throw new Error(`Janus: ${msg.error.reason}`);
  return msg;
}

// Events of a session arrive by long-poll; whoever waits for the next plugin event with
// a given property gets it.
const waiters = [];
const backlog = [];
function nextEvent(match) {
  const i = backlog.findIndex(match);
  if (i >= 0) return Promise.resolve(backlog.splice(i, 1)[0]);
  return new Promise((resolve) => waiters.push({ match, resolve }));
}
async function poll(session) {
  while (demo.state !== "closed") {
    let events;
    try {
      const r = await fetch(`/janus/${session}?maxev=5&rid=${Date.now()}`);
      events = await r.json();
    } catch (e) {
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    for (const ev of Array.isArray(events) ? events : [events]) {
      if (ev.janus === "keepalive") continue;
      if (ev.janus === "hangup") setState("hangup", ev.reason);
      const w = waiters.findIndex((x) => x.match(ev));
      if (w >= 0) waiters.splice(w, 1)[0].resolve(ev);
      else backlog.push(ev);
    }
  }
}

async function iceConfig() {
  const policy = params.get("policy");
  const r = await fetch(`/ice-config${policy ? `?policy=${policy}` : ""}`);
  if (!r.ok) throw new Error(`/ice-config: ${r.status} ${await r.text()}`);
  const cfg = await r.json();
  demo.iceServers = cfg.iceServers.flatMap((s) => s.urls);
  return cfg;
}

function peerConnection(cfg) {
  const pc = new RTCPeerConnection(cfg);
  demo.pc = pc;
  pc.addEventListener("icecandidateerror", (e) => {
    demo.candidateErrors.push({ url: e.url, code: e.errorCode, text: e.errorText });
  });
  pc.addEventListener("iceconnectionstatechange", () => {
    const s = pc.iceConnectionState;
    if ((s === "connected" || s === "completed") && demo.iceConnectedMs === null) {
      demo.iceConnectedMs = Math.round(performance.now() - demo.startedAt);
      mark("connected");
      setState("connected");
    }
    if (s === "failed") setState("failed", "ICE failed: no relayed path to Janus");
  });
  pc.addEventListener("icegatheringstatechange", () => {
    // Every TURN server refused or was unreachable: nothing can connect.
    if (pc.iceGatheringState === "complete" && demo.relayCandidates === 0 && demo.state !== "connected") {
      setState("failed", "no relay candidate: " + JSON.stringify(demo.candidateErrors));
    }
  });
  demo.relayCandidates = 0;
  pc.addEventListener("icecandidate", (e) => {
    if (e.candidate && e.candidate.type === "relay") {
      demo.relayCandidates++;
      mark(`relay ${e.candidate.relayProtocol || ""} ${demo.relayCandidates}`);
    }
  });
  pc.addEventListener("track", (e) => {
    const v = document.getElementById("remote");
    if (!v.srcObject) v.srcObject = new MediaStream();
    v.srcObject.addTrack(e.track);
  });
  return pc;
}

// Trickle ICE: the SDP goes to Janus at once and each candidate follows as it is
// gathered, so the call connects on the first relayed candidate (UDP, in tens of
// milliseconds) instead of waiting for the slowest TURN transport.
function trickle(session, handle, pc) {
  const queue = [];
  let ready = false;
  const send = (candidate) =>
    janus(`/${session}/${handle}`, { janus: "trickle", candidate }).catch(() => {});
  pc.addEventListener("icecandidate", (e) => {
    const c = e.candidate ? e.candidate.toJSON() : { completed: true };
    if (e.candidate === null) mark("gathered");
    if (ready) send(c);
    else queue.push(c);
  });
  return () => {
    ready = true;
    for (const c of queue.splice(0)) send(c);
  };
}

async function camera(pc) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
  mark("camera");
  document.getElementById("local").srcObject = stream;
  for (const t of stream.getTracks()) pc.addTrack(t, stream);
}

// A network that lets no TURN transport through shows as candidate errors; some (UDP)
// only after long retransmissions. The call fails clearly at a deadline, never hangs.
function deadline() {
  const seconds = Number(params.get("timeout") || 10);
  setTimeout(() => {
    if (demo.state !== "connected") {
      const errors = demo.candidateErrors.map((e) => `${e.url}: ${e.code} ${e.text}`);
      setState("failed", `no relayed path within ${seconds} s; ${errors.join("; ") || "no candidate error"}`);
    }
  }, seconds * 1000);
}

async function offerTo(session, handle, pc, body) {
  const flush = trickle(session, handle, pc);
  await pc.setLocalDescription(await pc.createOffer());
  mark("offer");
  deadline();
  await janus(`/${session}/${handle}`, { janus: "message", body, jsep: pc.localDescription });
  flush();
  const ev = await nextEvent((e) => e.sender === handle && e.jsep);
  mark("answer");
  await pc.setRemoteDescription(ev.jsep);
}

async function run() {
  const cfg = await iceConfig();
  mark("iceConfig");
  const session = (await janus("", { janus: "create" })).data.id;
  demo.session = session;
  poll(session);
  const plugin = mode === "echotest" ? "janus.plugin.echotest" : "janus.plugin.videoroom";
  const handle = (await janus(`/${session}`, { janus: "attach", plugin })).data.id;
  const pc = peerConnection(cfg);
  setState("negotiating");
  if (mode === "echotest") {
    await camera(pc);
    await offerTo(session, handle, pc, { audio: true, video: true });
  } else if (mode === "publish") {
    await janus(`/${session}/${handle}`, {
      janus: "message", body: { request: "join", ptype: "publisher", room, display: "turnpike-demo" },
    });
    await nextEvent((e) => e.sender === handle && e.plugindata?.data?.videoroom === "joined");
    await camera(pc);
    await offerTo(session, handle, pc, { request: "publish", audio: true, video: true });
  } else if (mode === "subscribe") {
    const feed = await firstPublisher(session, handle);
    await janus(`/${session}/${handle}`, {
      janus: "message", body: { request: "join", ptype: "subscriber", room, streams: [{ feed }] },
    });
    const ev = await nextEvent((e) => e.sender === handle && e.jsep);
    mark("offer");
    deadline();
    const flush = trickle(session, handle, pc);
    await pc.setRemoteDescription(ev.jsep);
    await pc.setLocalDescription(await pc.createAnswer());
    await janus(`/${session}/${handle}`, {
      janus: "message", body: { request: "start", room }, jsep: pc.localDescription,
    });
    flush();
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  keepalive(session);
  setInterval(showStats, 1000);
}

// The room's first publisher, waiting for one to appear.
async function firstPublisher(session, handle) {
  for (;;) {
    const r = await janus(`/${session}/${handle}`, {
      janus: "message", body: { request: "listparticipants", room },
    });
    const p = r.plugindata?.data?.participants?.find((x) => x.publisher);
    if (p) return p.id;
    await new Promise((r) => setTimeout(r, 300));
  }
}

function keepalive(session) {
  setInterval(() => janus(`/${session}`, { janus: "keepalive" }).catch(() => {}), 20000);
}

// What a test asserts on: the selected pair's candidate types and the media counters.
demo.stats = async function () {
  const out = { inbound: {}, outbound: {} };
  if (!demo.pc) return out;
  const report = await demo.pc.getStats();
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) {
      const pair = byId.get(s.selectedCandidatePairId);
      const local = pair && byId.get(pair.localCandidateId);
      const remote = pair && byId.get(pair.remoteCandidateId);
      out.selected = {
        local: local && { type: local.candidateType, protocol: local.relayProtocol || local.protocol, url: local.url },
        remote: remote && { type: remote.candidateType, address: remote.address, port: remote.port },
      };
    }
    if (s.type === "inbound-rtp") {
      out.inbound[s.kind] = {
        packetsReceived: s.packetsReceived, packetsLost: s.packetsLost, bytesReceived: s.bytesReceived,
        framesDecoded: s.framesDecoded, frameWidth: s.frameWidth, frameHeight: s.frameHeight,
      };
    }
    if (s.type === "outbound-rtp") {
      out.outbound[s.kind] = { packetsSent: s.packetsSent, bytesSent: s.bytesSent };
    }
  });
  return out;
};

async function showStats() {
  const s = await demo.stats();
  document.getElementById("stats").textContent = JSON.stringify(s, null, 1);
}

run().catch((e) => setState("failed", e.message || e));
