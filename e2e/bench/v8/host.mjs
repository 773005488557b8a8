// A minimal proxy-wasm host for node, so that make bench can time the module in V8, the engine
// Envoy and Istio run it in. It implements only what the filter and the floor filter import
// (the host functions of proxy-wasm-cpp-host include/proxy-wasm/exports.h, with Envoy's WASI
// subset), for one VM on one thread: one root context, streams created and ended one at a
// time, callouts to the IdP made with fetch and answered on the event loop. Shared data, queues
// and metrics live in this process. It is a measuring instrument, not a test host: e2e/host is
// the faithful one.
//
//   node host.mjs <spec.json>
//
// spec: {filter, floor: paths of .wasm; pluginConfig: JSON string; env: {NAME: value};
//        clusters: {name: base URL}; userToken; rounds; batch; chunk; warmup}
// Prints one JSON object: ns per request and per callback for hit, passthrough and floor,
// per round.

import { readFileSync } from "node:fs";
import { webcrypto } from "node:crypto";

const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

// The host's own string work must not weigh on the module's time more than Envoy's C++ does:
// TextEncoder/TextDecoder cost ~1 µs a call for short strings, so short ASCII is decoded by
// Buffer's native slicing and the few distinct strings a run uses (header names and values,
// keys) are encoded once.
const encoded = new Map();
const enc = {
  encode(str) {
    let b = encoded.get(str);
    if (!b) {
      b = textEncoder.encode(str);
      if (encoded.size < 4096) encoded.set(str, b);
    }
    return b;
  },
};
// Short ASCII (header names, shared-data keys) is cut out by Buffer's latin1Slice, which is the
// same characters for bytes below 128 and a quarter the cost of building the string by hand
// (~160 vs ~390 ns for a 15-byte key with its Map lookup, node 20).
const latin1Slice = Buffer.prototype.latin1Slice;
const shortMax = 64;
const shortStrings = new Map(); // hash of the bytes -> {bytes, str}
const dec = {
  decode(bytes) {
    if (bytes.length > 256) return textDecoder.decode(bytes);
    for (let i = 0; i < bytes.length; i++) if (bytes[i] > 127) return textDecoder.decode(bytes);
    return latin1Slice.call(bytes, 0, bytes.length);
  },
};

const MAP_REQUEST_HEADERS = 0, MAP_RESPONSE_HEADERS = 2, MAP_CALL_RESPONSE_HEADERS = 6;
const BUF_CALL_RESPONSE_BODY = 4, BUF_VM_CONFIG = 6, BUF_PLUGIN_CONFIG = 7;
const OK = 0, NOT_FOUND = 1, BAD_ARGUMENT = 2, EMPTY = 7, CAS_MISMATCH = 8;
const ROOT = 1;

class VM {
  constructor(bytes, pluginConfig, env, clusters) {
    this.bytes = bytes;
    this.pluginConfig = enc.encode(pluginConfig);
    this.env = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    this.clusters = clusters;
    this.shared = new Map(); // key -> {value: Uint8Array, cas}
    this.casCounter = 0;
    this.queues = new Map(); // id -> {name, items: []}
    this.queueIds = new Map(); // name -> id
    this.metrics = new Map(); // id -> {name, value}
    this.nextMetric = 1;
    this.callouts = new Map(); // token -> promise of the answer
    this.nextToken = 1;
    this.pendingCallouts = [];
    this.requestHeaders = [];
    this.responseHeaders = [];
    this.callResponse = null; // {headers, body} while proxy_on_http_call_response runs
    this.local = null; // the local reply of the current stream
    this.continued = false;
    this.tickMs = 0;
    this.logs = [];
  }

  async start() {
    const mod = await WebAssembly.compile(this.bytes);
    const imports = { env: this.envImports(), wasi_snapshot_preview1: this.wasiImports() };
    this.instance = await WebAssembly.instantiate(mod, imports);
    this.x = this.instance.exports;
    // Envoy asks an export named malloc for a returned value's room, and proxy_on_memory_allocate
    // only when there is none (proxy-wasm-cpp-host src/wasm.cc, WasmBase::getFunctions).
    this.malloc = this.x.malloc ?? this.x.proxy_on_memory_allocate;
    this.x._initialize?.();
    this.x.proxy_on_context_create(ROOT, 0);
    if (!this.x.proxy_on_vm_start(ROOT, 0)) throw new Error("on_vm_start failed");
    if (!this.x.proxy_on_configure(ROOT, this.pluginConfig.length)) throw new Error("on_configure failed: " + this.logs.join(" | "));
  }

  // mem and bytes are views of linear memory, made again only when memory grew.
  mem() { this.views(); return this.dv; }
  bytesAt(ptr, len) { this.views(); return this.u8.subarray(ptr, ptr + len); }
  // Reading memory.buffer is a call into V8's API each time; a view of a grown memory's old
  // buffer has length 0 (the buffer is detached), which is cheaper to test.
  views() {
    if (this.u8 === undefined || this.u8.byteLength === 0) {
      const buf = this.x.memory.buffer;
      this.dv = new DataView(buf);
      this.u8 = new Uint8Array(buf);
    }
  }
  // str decodes a string the module passed. Header names and shared-data keys recur on every
  // request: they are looked up by their bytes in a small table rather than decoded again
  // (Envoy's C++ takes a string_view of them, which costs nothing).
  str(ptr, len) {
    if (len > shortMax) return dec.decode(this.bytesAt(ptr, len));
    this.views();
    const u8 = this.u8;
    let h = len;
    for (let i = 0; i < len; i++) h = (Math.imul(h, 31) + u8[ptr + i]) | 0;
    const e = shortStrings.get(h);
    if (e !== undefined && e.bytes.length === len) {
      let i = 0;
      while (i < len && e.bytes[i] === u8[ptr + i]) i++;
      if (i === len) return e.str;
    }
    const str = dec.decode(u8.subarray(ptr, ptr + len));
    if (shortStrings.size < 4096) shortStrings.set(h, { bytes: u8.slice(ptr, ptr + len), str });
    return str;
  }

  // put copies data into memory the module allocates and writes its address and size.
  put(data, retPtr, retSize) {
    const ptr = data.length ? this.malloc(data.length) : 0;
    if (data.length) { this.views(); this.u8.set(data, ptr); }
    const m = this.mem();
    m.setUint32(retPtr, ptr, true);
    m.setUint32(retSize, data.length, true);
    return OK;
  }

  headerMap(type) {
    switch (type) {
      case MAP_REQUEST_HEADERS: return this.requestHeaders;
      case MAP_RESPONSE_HEADERS: return this.responseHeaders;
      case MAP_CALL_RESPONSE_HEADERS: return this.callResponse ? this.callResponse.headers : null;
    }
    return null;
  }

  envImports() {
    const vm = this;
    const pairsBytes = (pairs) => {
      const parts = pairs.map(([k, v]) => [enc.encode(k), enc.encode(v)]);
      let size = 4;
      for (const [k, v] of parts) size += 8 + k.length + v.length + 2;
      const out = new Uint8Array(size);
      const dv = new DataView(out.buffer);
      dv.setUint32(0, parts.length, true);
      let off = 4;
      for (const [k, v] of parts) { dv.setUint32(off, k.length, true); dv.setUint32(off + 4, v.length, true); off += 8; }
      for (const [k, v] of parts) { out.set(k, off); off += k.length + 1; out.set(v, off); off += v.length + 1; }
      return out;
    };
    const parsePairs = (ptr, len) => {
      if (len === 0) return [];
      const b = vm.bytesAt(ptr, len).slice();
      const dv = new DataView(b.buffer);
      const n = dv.getUint32(0, true);
      const sizes = [];
      let off = 4;
      for (let i = 0; i < n; i++) { sizes.push([dv.getUint32(off, true), dv.getUint32(off + 4, true)]); off += 8; }
      const out = [];
      for (const [k, v] of sizes) {
        const key = dec.decode(b.subarray(off, off + k)); off += k + 1;
        const val = dec.decode(b.subarray(off, off + v)); off += v + 1;
        out.push([key, val]);
      }
      return out;
    };
    // dropKey removes every value of key (HeaderMap::remove) and takes their bytes off the size.
    const dropKey = (m, key, keyBytes) => {
      let w = 0;
      for (let r = 0; r < m.length; r++) {
        if (m[r][0] === key) {
          if (m.byteSize !== undefined) m.byteSize -= m[r][2] ?? keyBytes + Buffer.byteLength(m[r][1]);
        } else {
          m[w++] = m[r];
        }
      }
      while (m.length > w) m.pop(); // cheaper than the length setter, which trims the store
    };
    return {
      proxy_log(level, ptr, len) { if (level >= 3) vm.logs.push(vm.str(ptr, len)); return OK; },
      proxy_get_log_level(ret) { vm.mem().setUint32(ret, 2, true); return OK; },
      proxy_get_property(ptr, len, retPtr, retSize) { return NOT_FOUND; },
      proxy_set_effective_context() { return OK; },
      proxy_set_tick_period_milliseconds(ms) { vm.tickMs = ms; return OK; },
      proxy_get_buffer_bytes(type, start, max, retPtr, retSize) {
        let buf;
        if (type === BUF_PLUGIN_CONFIG) buf = vm.pluginConfig;
        else if (type === BUF_VM_CONFIG) buf = new Uint8Array(0);
        else if (type === BUF_CALL_RESPONSE_BODY && vm.callResponse) buf = vm.callResponse.body;
        else return NOT_FOUND;
        return vm.put(buf.subarray(start, start + max), retPtr, retSize);
      },
      proxy_get_header_map_value(type, kp, kl, retPtr, retSize) {
        const m = vm.headerMap(type);
        if (!m) return BAD_ARGUMENT;
        const key = vm.str(kp, kl);
        for (const [k, v] of m) if (k === key) return vm.put(enc.encode(v), retPtr, retSize);
        return NOT_FOUND;
      },
      proxy_get_header_map_pairs(type, retPtr, retSize) {
        const m = vm.headerMap(type);
        if (!m) return BAD_ARGUMENT;
        return vm.put(pairsBytes(m), retPtr, retSize);
      },
      // Envoy's HeaderMap::byteSize(): every name's and value's length (context.cc getHeaderMapSize),
      // kept up to date by each change rather than summed per call (header_map_impl.h byteSize()
      // answers cached_byte_size_, which addSize/subtractSize maintain): a stream's maps arrive
      // counted (headerMap below), a callout's answer is summed at its first query.
      proxy_get_header_map_size(type, ret) {
        const m = vm.headerMap(type);
        if (!m) return BAD_ARGUMENT;
        if (m.byteSize === undefined) {
          let n = 0;
          for (const [k, v] of m) n += Buffer.byteLength(k) + Buffer.byteLength(v);
          m.byteSize = n;
        }
        vm.mem().setUint32(ret, m.byteSize, true);
        return OK;
      },
      proxy_replace_header_map_value(type, kp, kl, vp, vl) {
        const m = vm.headerMap(type);
        if (!m) return BAD_ARGUMENT;
        const key = vm.str(kp, kl), val = vm.str(vp, vl);
        dropKey(m, key, kl);
        m.push([key, val, kl + vl]);
        if (m.byteSize !== undefined) m.byteSize += kl + vl;
        return OK;
      },
      proxy_remove_header_map_value(type, kp, kl) {
        const m = vm.headerMap(type);
        if (!m) return BAD_ARGUMENT;
        dropKey(m, vm.str(kp, kl), kl);
        return OK;
      },
      proxy_get_shared_data(kp, kl, retPtr, retSize, retCas) {
        const e = vm.shared.get(vm.str(kp, kl));
        if (!e) return NOT_FOUND;
        vm.mem().setUint32(retCas, e.cas, true);
        return vm.put(e.value, retPtr, retSize);
      },
      proxy_set_shared_data(kp, kl, vp, vl, cas) {
        const key = vm.str(kp, kl);
        const e = vm.shared.get(key);
        // cpp-host src/shared_data.cc SharedData::set: a cas only guards an existing key, and
        // every write takes the next value of one counter.
        if (e && cas !== 0 && e.cas !== cas) return CAS_MISMATCH;
        vm.shared.set(key, { value: vm.bytesAt(vp, vl).slice(), cas: ++vm.casCounter });
        return OK;
      },
      proxy_register_shared_queue(np, nl, ret) {
        const name = vm.str(np, nl);
        let id = vm.queueIds.get(name);
        if (!id) { id = vm.queueIds.size + 1; vm.queueIds.set(name, id); vm.queues.set(id, { name, items: [] }); }
        vm.mem().setUint32(ret, id, true);
        return OK;
      },
      proxy_resolve_shared_queue(vp, vl, np, nl, ret) {
        const id = vm.queueIds.get(vm.str(np, nl));
        if (!id) return NOT_FOUND;
        vm.mem().setUint32(ret, id, true);
        return OK;
      },
      proxy_enqueue_shared_queue(id, vp, vl) {
        const q = vm.queues.get(id);
        if (!q) return NOT_FOUND;
        q.items.push(vm.bytesAt(vp, vl).slice());
        setImmediate(() => vm.x.proxy_on_queue_ready(ROOT, id));
        return OK;
      },
      proxy_dequeue_shared_queue(id, retPtr, retSize) {
        const q = vm.queues.get(id);
        if (!q) return NOT_FOUND;
        if (!q.items.length) return EMPTY;
        return vm.put(q.items.shift(), retPtr, retSize);
      },
      proxy_define_metric(type, np, nl, ret) {
        const id = vm.nextMetric++;
        vm.metrics.set(id, { name: vm.str(np, nl), value: 0n });
        vm.mem().setUint32(ret, id, true);
        return OK;
      },
      proxy_increment_metric(id, offset) {
        const m = vm.metrics.get(id);
        if (!m) return NOT_FOUND;
        m.value += BigInt(offset);
        return OK;
      },
      proxy_record_metric(id, value) {
        const m = vm.metrics.get(id);
        if (!m) return NOT_FOUND;
        m.value = BigInt(value);
        return OK;
      },
      proxy_continue_stream() { vm.continued = true; return OK; },
      proxy_send_local_response(status, dp, dl, bp, bl) { vm.local = status; return OK; },
      proxy_http_call(up, ul, hp, hl, bp, bl, tp, tl, timeout, retToken) {
        const cluster = vm.str(up, ul);
        const base = vm.clusters[cluster];
        if (!base) return BAD_ARGUMENT;
        const headers = parsePairs(hp, hl);
        const body = vm.bytesAt(bp, bl).slice();
        const token = vm.nextToken++;
        vm.mem().setUint32(retToken, token, true);
        vm.pendingCallouts.push(vm.callout(token, base, headers, body));
        return OK;
      },
    };
  }

  async callout(token, base, headers, body) {
    let method = "GET", path = "/";
    const h = {};
    for (const [k, v] of headers) {
      if (k === ":method") method = v;
      else if (k === ":path") path = v;
      else if (!k.startsWith(":")) h[k] = v;
    }
    let answer;
    try {
      const resp = await fetch(base + path, { method, headers: h, body: method === "GET" ? undefined : body });
      const rh = [[":status", String(resp.status)]];
      resp.headers.forEach((v, k) => rh.push([k, v]));
      answer = { headers: rh, body: new Uint8Array(await resp.arrayBuffer()) };
    } catch {
      answer = null;
    }
    this.callResponse = answer || { headers: [], body: new Uint8Array(0) };
    this.x.proxy_on_http_call_response(ROOT, token, answer ? answer.headers.length : 0, answer ? answer.body.length : 0, 0);
    this.callResponse = null;
  }

  wasiImports() {
    const vm = this;
    const ENOSYS = 52, EBADF = 8;
    return {
      fd_write(fd, iovs, n, retN) {
        const m = vm.mem();
        let total = 0, text = "";
        for (let i = 0; i < n; i++) {
          const p = m.getUint32(iovs + 8 * i, true), l = m.getUint32(iovs + 8 * i + 4, true);
          text += vm.str(p, l);
          total += l;
        }
        if (fd === 2) vm.logs.push(text);
        m.setUint32(retN, total, true);
        return 0;
      },
      fd_read() { return ENOSYS; },
      fd_seek() { return 0; },
      fd_close() { return 0; },
      fd_fdstat_get(fd, ret) {
        if (fd > 2) return EBADF;
        const b = vm.bytesAt(ret, 24);
        b.fill(0);
        b[8] = 64;
        return 0;
      },
      fd_fdstat_set_flags() { return ENOSYS; },
      fd_prestat_get() { return EBADF; },
      fd_prestat_dir_name() { return ENOSYS; },
      path_open() { return 44; },
      environ_sizes_get(cntPtr, sizePtr) {
        const m = vm.mem();
        m.setUint32(cntPtr, vm.env.length, true);
        m.setUint32(sizePtr, vm.env.reduce((s, kv) => s + enc.encode(kv).length + 1, 0), true);
        return 0;
      },
      environ_get(arr, buf) {
        const m = vm.mem();
        for (const kv of vm.env) {
          const b = enc.encode(kv + "\0");
          m.setUint32(arr, buf, true);
          vm.bytesAt(buf, b.length).set(b);
          arr += 4;
          buf += b.length;
        }
        return 0;
      },
      args_sizes_get(c, s) { const m = vm.mem(); m.setUint32(c, 0, true); m.setUint32(s, 0, true); return 0; },
      args_get() { return 0; },
      clock_time_get(id, precision, ret) {
        let now;
        if (id === 0) now = BigInt(Date.now()) * 1000000n;
        else if (id === 1) now = process.hrtime.bigint();
        else return 58;
        vm.mem().setBigUint64(ret, now, true);
        return 0;
      },
      random_get(ptr, len) { webcrypto.getRandomValues(vm.bytesAt(ptr, len)); return 0; },
      sched_yield() { return 0; },
      poll_oneoff(inp, out, n, retN) { vm.mem().setUint32(retN, 0, true); return 0; },
      proc_exit() { vm.logs.push("proc_exit"); },
    };
  }

  async settleCallouts() {
    while (this.pendingCallouts.length) {
      const p = this.pendingCallouts.splice(0);
      await Promise.all(p);
      await new Promise((r) => setImmediate(r));
    }
  }

  async tick() {
    this.x.proxy_on_tick(ROOT);
    await this.settleCallouts();
  }
}

// headerMap is a stream's header map as Envoy's codec hands it to the filter chain: its byte size
// already counted, as HeaderMapImpl counts each header while it is added (header_map_impl.cc
// addSize), so that no filter's first size query pays for the sum; each entry keeps its own
// byte size for the removal to subtract (subtractSize), as Envoy's entries know theirs.
function headerMap(pairs) {
  let total = 0;
  const m = pairs.map(([k, v]) => {
    const n = Buffer.byteLength(k) + Buffer.byteLength(v);
    total += n;
    return [k, v, n];
  });
  m.byteSize = total;
  return m;
}

let nextStream = 2;
const calls = ["proxy_on_context_create", "proxy_on_request_headers", "proxy_on_response_headers", "proxy_on_log", "proxy_on_done", "proxy_on_delete"];

// request runs one stream through vm and adds each callback's time (ns) to into; a held
// request waits for its callouts (only in the warm-up: the timed paths never hold).
async function request(vm, path, token, into, wantAuth) {
  const id = nextStream++;
  vm.requestHeaders = headerMap([[":method", "GET"], [":path", path], [":authority", "gateway"], [":scheme", "http"], ["x-user-oidc-token", token]]);
  vm.responseHeaders = headerMap([[":status", "200"], ["content-type", "application/json"]]);
  vm.local = null;
  vm.continued = false;
  const x = vm.x;
  const timed = (i, f) => {
    const t0 = process.hrtime.bigint();
    const r = f();
    if (into) into[i] += Number(process.hrtime.bigint() - t0);
    return r;
  };
  timed(0, () => x.proxy_on_context_create(id, ROOT));
  const action = timed(1, () => x.proxy_on_request_headers(id, vm.requestHeaders.length, 1));
  if (action !== 0) {
    if (into) throw new Error(`${path}: held or answered during timing`);
    for (let i = 0; i < 200 && !vm.continued && vm.local === null; i++) {
      await vm.settleCallouts();
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  if (vm.local !== null) throw new Error(`${path}: local reply ${vm.local}: ${vm.logs.slice(-3).join(" | ")}`);
  if (vm.requestHeaders.some(([k]) => k === "authorization") !== wantAuth) throw new Error(`${path}: authorization header ${wantAuth ? "missing" : "added"}`);
  timed(2, () => x.proxy_on_response_headers(id, vm.responseHeaders.length, 0));
  timed(3, () => x.proxy_on_log(id));
  timed(4, () => x.proxy_on_done(id));
  timed(5, () => x.proxy_on_delete(id));
}

// metric is the value of the counter named name (0n for none).
function metric(vm, name) {
  for (const m of vm.metrics.values()) if (m.name === name) return m.value;
  return 0n;
}

async function main() {
  const filter = new VM(readFileSync(spec.filter), spec.pluginConfig, spec.env, spec.clusters);
  await filter.start();
  for (let i = 0; i < 50 && ![...filter.shared.keys()].some((k) => k.endsWith(":sa")); i++) {
    await filter.tick();
  }
  if (![...filter.shared.keys()].some((k) => k.endsWith(":sa"))) throw new Error("no service-account token: " + filter.logs.join(" | "));
  // The floor writes the very authorization value the filter writes for this user: its first
  // request (an exchange) shows it.
  await request(filter, "/api", spec.userToken, null, true);
  const authorization = filter.requestHeaders.find(([k]) => k === "authorization")?.[1];
  if (!authorization?.startsWith("Bearer ")) throw new Error("the hit user's first request got no bearer token");
  const floor = new VM(readFileSync(spec.floor), authorization, {}, {});
  await floor.start();

  // metric: a counter that must grow by one per request of the kind, as in the wazero run, so
  // that a round timing another path (a hit turned miss, a fallback) fails instead of counting.
  let kinds = [
    { name: "hit", vm: filter, path: "/api", auth: true, metric: "token_exchange.cache.hit" },
    { name: "passthrough", vm: filter, path: "/static/app.js", auth: false, metric: "token_exchange.requests_passed_through" },
    { name: "floor", vm: floor, path: "/api", auth: true },
  ];
  if (spec.only) kinds = kinds.filter((k) => k.name === spec.only);
  for (const k of kinds) {
    for (let i = 0; i < spec.warmup; i++) await request(k.vm, k.path, spec.userToken, null, k.auth);
    k.rounds = [];
    k.byCall = new Array(calls.length).fill(0);
  }
  // Within a round the kinds take turns every spec.chunk requests, so that they see the same
  // drift in the machine's speed; the host's own (JavaScript) garbage is collected between
  // rounds, not inside them.
  const chunk = spec.chunk || spec.batch;
  for (let r = 0; r < spec.rounds; r++) {
    globalThis.gc?.();
    const into = kinds.map(() => new Array(calls.length).fill(0));
    const before = kinds.map((k) => metric(k.vm, k.metric));
    for (let c = 0; c < spec.batch; c += chunk) {
      for (const [j, k] of kinds.entries()) {
        for (let i = 0; i < chunk; i++) await request(k.vm, k.path, spec.userToken, into[j], k.auth);
      }
    }
    for (const [j, k] of kinds.entries()) {
      const grew = metric(k.vm, k.metric) - before[j];
      if (k.metric && grew !== BigInt(spec.batch)) {
        throw new Error(`${k.name}: ${k.metric} grew by ${grew} for ${spec.batch} requests: not the path meant: ${k.vm.logs.slice(-3).join(" | ")}`);
      }
    }
    kinds.forEach((k, j) => {
      k.rounds.push(into[j].reduce((a, b) => a + b, 0) / spec.batch);
      into[j].forEach((v, i) => (k.byCall[i] += v));
    });
  }
  if (spec.only) {
    process.stdout.write(JSON.stringify({ engine: "profile run", [spec.only]: { rounds: kinds[0].rounds, byCall: {} } }) + "\n");
    return;
  }
  const out = { engine: `V8 ${process.versions.v8} (node ${process.version})` };
  for (const k of kinds) {
    const byCall = {};
    calls.forEach((c, i) => (byCall[c] = Math.round(k.byCall[i] / (spec.rounds * spec.batch))));
    out[k.name] = { rounds: k.rounds, byCall };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack || e) + "\n");
  process.exit(1);
});
