// The demo's application server, as a real app would have one: it serves the page,
// asks Turnpike's auth service for an ICE config with its own token (the token never
// reaches the browser), and forwards the page's Janus API calls to Janus, which only it
// can reach. Node's standard library only.
//
//   node examples/janus/app/server.mjs
//
// Environment:
//   APP_LISTEN    address:port to serve on, or several, comma-separated (default
//                 127.0.0.1:8443)
//   APP_TLS_CERT, APP_TLS_KEY   PEM files: serve HTTPS (a browser needs a secure context
//                 for the camera; plain HTTP is fine on 127.0.0.1)
//   AUTH_URL      the auth service (default http://127.0.0.1:8088)
//   AUTH_TOKEN    the JWT for it (e.g. from `turnpike token --dir DIR`), or
//   APP_JWT_KEY   the HMAC key the GatewayConfig's authService.jwt.hmacSecretRef names:
//                 the server then signs a short-lived HS256 token per request, with
//                 APP_JWT_ISSUER (default janus-demo-app) and APP_JWT_AUDIENCE (turnpike)
//   GATEWAY       the Gateway whose ICE config to hand out (namespace/name), or
//   NAMESPACE     every Gateway of a namespace (e.g. one per address family)
//   JANUS_URL     Janus' REST API (default http://127.0.0.1:8188/janus)
import { createHmac } from "node:crypto";
import { createServer as createHttp } from "node:http";
import { createServer as createHttps } from "node:https";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const env = process.env;
const listen = env.APP_LISTEN || "127.0.0.1:8443";
const authUrl = env.AUTH_URL || "http://127.0.0.1:8088";
const staticToken = env.AUTH_TOKEN || "";
const gateway = env.GATEWAY || "";
const namespace = env.NAMESPACE || "";
const janusUrl = (env.JANUS_URL || "http://127.0.0.1:8188/janus").replace(/\/$/, "");

const files = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/index.html": ["index.html", "text/html; charset=utf-8"],
  "/app.js": ["app.js", "text/javascript; charset=utf-8"],
};

// A token for the auth service: the configured one, or a fresh HS256 JWT for this user
// that expires in a minute (the auth service checks iss, aud and exp).
function token(user) {
  if (!env.APP_JWT_KEY) return staticToken;
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({
    iss: env.APP_JWT_ISSUER || "janus-demo-app",
    aud: env.APP_JWT_AUDIENCE || "turnpike",
    sub: user,
    iat: now,
    exp: now + 60,
  })}`;
  const signature = createHmac("sha256", env.APP_JWT_KEY).update(unsigned).digest("base64url");
  return `${unsigned}.${signature}`;
}

function send(res, status, type, body) {
  res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
  res.end(body);
}

function log(...args) {
  console.log(new Date().toISOString(), ...args);
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks);
}

// GET /ice-config[?policy=all]: the auth service's RTCConfiguration for this Gateway, for
// a user id the app chooses (here: per page load).
async function iceConfig(url, res) {
  const user = `demo-${Date.now() % 100000}`;
  const q = new URLSearchParams({ userid: user });
  if (gateway) q.set("gateway", gateway);
  if (namespace) q.set("namespace", namespace);
  const policy = url.searchParams.get("policy");
  if (policy) q.set("iceTransportPolicy", policy);
  const r = await fetch(`${authUrl}/ice-config?${q}`, {
    headers: { authorization: `Bearer ${token(user)}` },
  });
  const body = await r.text();
  if (!r.ok) log(`auth service answered ${r.status}: ${body}`);
  send(res, r.ok ? 200 : 502, "application/json", body);
}

// /janus/...: forwarded as is (Janus long-polls on GET /janus/SESSION).
async function janus(req, url, res) {
  const target = janusUrl + url.pathname.slice("/janus".length) + url.search;
  const init = { method: req.method, headers: { "content-type": "application/json" } };
  if (req.method === "POST") init.body = await readBody(req);
  const r = await fetch(target, init);
  send(res, r.status, "application/json", await r.text());
}

async function handle(req, res) {
  const url = new URL(req.url, "http://app");
  try {
    if (url.pathname === "/ice-config") return await iceConfig(url, res);
    if (url.pathname === "/janus" || url.pathname.startsWith("/janus/")) {
      return await janus(req, url, res);
    }
    const f = files[url.pathname];
    if (f && req.method === "GET") return send(res, 200, f[1], readFileSync(join(here, f[0])));
    send(res, 404, "text/plain", "not found\n");
  } catch (e) {
    log(`${req.method} ${url.pathname}: ${e}`);
    send(res, 502, "text/plain", `${e}\n`);
  }
}

const tls = env.APP_TLS_CERT && env.APP_TLS_KEY
  ? { cert: readFileSync(env.APP_TLS_CERT), key: readFileSync(env.APP_TLS_KEY) }
  : null;
const servers = listen.split(",").map((addr) => {
  const server = tls ? createHttps(tls, handle) : createHttp(handle);
  const i = addr.lastIndexOf(":");
  const host = addr.slice(0, i).replace(/^\[|\]$/g, "");
  server.listen(Number(addr.slice(i + 1)), host, () => {
    log(`app server on ${tls ? "https" : "http"}://${addr} (Gateways ${gateway || namespace}, Janus ${janusUrl})`);
  });
  return server;
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
