// Rust object_store client of the end-to-end suite (scripts/e2e), through
// nodejs-polars, whose native module (nodejs-polars-linux-x64-gnu) embeds
// polars-io and with it apache/arrow-rs-object-store. Polars builds its S3
// store with AmazonS3Builder::from_env, so credentials come only from
// object_store's own chain: static keys, web identity, the ECS relative URI,
// EKSPodCredentialProvider (AWS_CONTAINER_CREDENTIALS_FULL_URI together with
// AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE; the env token is never read), and
// otherwise instance metadata.
//
//   NODE_PATH=<dir>/node_modules node objstore.mjs version
//   NODE_PATH=<dir>/node_modules node objstore.mjs roundtrip BUCKET PREFIX FILE
//   NODE_PATH=<dir>/node_modules node objstore.mjs imds-trap BUCKET PREFIX
//
// roundtrip: upload FILE's bytes (hex, in 64 KiB rows of an uncompressed
// Parquet file written by polars' cloud sink: object_store PUT or multipart),
// list PREFIX (a glob scan: object_store LIST), download it (object_store
// GET) and compare the bytes. Every S3 request goes through a logging proxy
// in this process, which records the x-amz-security-token header object_store
// sends (cwcreds serves "Token": "") and whether SigV4 signed it. Prints
// "ok key=... bytes=N token-header=..."; object_store does not say which
// access key it signed with. The endpoint comes from E2E_ENDPOINT
// (path-style, plain http).
//
// imds-trap: point object_store's instance-metadata endpoint
// (AWS_METADATA_ENDPOINT) at a listener in this process that answers 404 and
// records what it is asked, then list PREFIX. With FULL_URI and only the env
// token, object_store must skip the container endpoint and fall back to
// instance metadata: this exits 1 with "fell back to instance metadata: ..."
// when it did, and 0 (a surprise) when the list worked.
import http from "http";
import { createRequire } from "module";
import fs from "fs";
import crypto from "crypto";

const require = createRequire(import.meta.url);
const ROW = 64 * 1024;

function cloudOptions() {
  const o = { aws_allow_http: "true", aws_virtual_hosted_style_request: "false" };
  if (process.env.E2E_ENDPOINT) o.aws_endpoint_url = process.env.E2E_ENDPOINT;
  if (process.env.AWS_REGION) o.aws_region = process.env.AWS_REGION;
  return o;
}

async function main() {
  const args = process.argv.slice(2);
  if (args[0] === "version") {
    const v = require("nodejs-polars/package.json").version;
    // The crates' versions, from the source paths compiled into the native module.
    const bin = fs.readFileSync(require.resolve("nodejs-polars-linux-x64-gnu/nodejs-polars.linux-x64-gnu.node")).toString("latin1");
    const crate = (name) => (bin.match(new RegExp(`${name}-(\\d+\\.\\d+\\.\\d+)`)) || [, "?"])[1];
    console.log(`nodejs-polars ${v} (object_store ${crate("object_store")}, polars ${crate("polars-io")}), node ${process.version}`);
    return;
  }
  // The endpoint is E2E_ENDPOINT (or the proxy in front of it) only: these,
  // read by object_store's from_env, would win over the cloud options.
  for (const k of ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]) delete process.env[k];
  const pl = require("nodejs-polars");
  if (args[0] === "imds-trap" && args.length === 3) return imdsTrap(pl, args[1], args[2]);
  if (args[0] !== "roundtrip" || args.length !== 4) throw new Error("usage: objstore.mjs version|roundtrip BUCKET PREFIX FILE|imds-trap BUCKET PREFIX");
  const [, bucket, prefix, file] = args;
  const proxy = await loggingProxy(process.env.E2E_ENDPOINT);
  const data = fs.readFileSync(file);
  const hex = [];
  for (let off = 0; off < data.length; off += ROW) hex.push(data.subarray(off, off + ROW).toString("hex"));
  const df = pl.DataFrame({ i: hex.map((_, n) => n), h: hex });
  const url = `s3://${bucket}/${prefix}/part-0.parquet`;
  const opts = { ...cloudOptions(), aws_endpoint_url: proxy.url };

  // Upload.
  await df.lazy().sinkParquet(url, { compression: "uncompressed", cloudOptions: opts }).collect();
  // List (glob) and download.
  const got = await pl
    .scanParquet(`s3://${bucket}/${prefix}/*.parquet`, { cloudOptions: opts, includeFilePaths: "path" })
    .collect();
  const paths = [...new Set(got.getColumn("path").toArray())];
  if (paths.length !== 1 || paths[0] !== url) throw new Error(`listed ${JSON.stringify(paths)}, want [${url}]`);
  const back = Buffer.from(got.sort("i").getColumn("h").toArray().join(""), "hex");
  if (!back.equals(data)) {
    const h = (b) => crypto.createHash("sha256").update(b).digest("hex");
    throw new Error(`downloaded ${back.length} bytes (sha256 ${h(back)}), uploaded ${data.length} (sha256 ${h(data)})`);
  }
  proxy.server.close();
  const seen = proxy.seen;
  if (!seen.length) throw new Error("no request went through the logging proxy: object_store used another endpoint");
  const withTok = seen.filter((r) => r.token !== undefined);
  const empty = withTok.filter((r) => r.token === "");
  const signed = withTok.filter((r) => r.signed);
  const ok = seen.filter((r) => r.status >= 200 && r.status < 300);
  for (const r of seen) console.log(`request ${r.method} ${r.path} token=${JSON.stringify(r.token ?? null)} signed=${r.signed} -> ${r.status}`);
  const summary = `${empty.length}/${seen.length} requests sent an empty x-amz-security-token, ${signed.length} signed it, versitygw answered 2xx to ${ok.length}`;
  console.log(`ok key=(object_store does not say) bytes=${back.length} token-header: ${summary}`);
}

// loggingProxy: an HTTP proxy on 127.0.0.1 that forwards every request
// unchanged (same Host, headers and body, so the signature still verifies)
// to upstream and records its security-token header and the answer.
function loggingProxy(upstream) {
  const up = new URL(upstream);
  const agent = new http.Agent({ keepAlive: true });
  const seen = [];
  const server = http.createServer((req, res) => {
    const headers = {};
    for (let i = 0; i < req.rawHeaders.length; i += 2) headers[req.rawHeaders[i]] = req.rawHeaders[i + 1];
    const auth = req.headers["authorization"] || "";
    const sh = (auth.match(/SignedHeaders=([^,\s]+)/) || [, ""])[1].split(";");
    const rec = { method: req.method, path: req.url.split("?")[0], token: req.headers["x-amz-security-token"], signed: sh.includes("x-amz-security-token"), status: 0 };
    seen.push(rec);
    const out = http.request({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers, agent }, (r) => {
      rec.status = r.statusCode;
      res.writeHead(r.statusCode, r.rawHeaders);
      r.pipe(res);
    });
    out.on("error", (e) => res.destroy(e));
    req.pipe(out);
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ server, seen, url: `http://127.0.0.1:${server.address().port}` })),
  );
}

async function imdsTrap(pl, bucket, prefix) {
  const asked = [];
  const server = http.createServer((req, res) => {
    asked.push(`${req.method} ${req.url}${req.headers["x-aws-ec2-metadata-token-ttl-seconds"] ? " ttl=" + req.headers["x-aws-ec2-metadata-token-ttl-seconds"] : ""}`);
    res.writeHead(404).end();
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  // Read by object_store's AmazonS3Builder::from_env when polars builds the store.
  process.env.AWS_METADATA_ENDPOINT = `http://127.0.0.1:${server.address().port}`;
  const t0 = Date.now();
  let err;
  try {
    await pl.scanParquet(`s3://${bucket}/${prefix}/*.parquet`, { cloudOptions: cloudOptions() }).collect();
  } catch (e) {
    err = e;
  }
  server.close();
  const ms = Date.now() - t0;
  if (!err) {
    console.log(`listed s3://${bucket}/${prefix}/ in ${ms} ms: object_store found credentials (instance metadata asked: ${JSON.stringify(asked)})`);
    return;
  }
  console.error(String(err && err.message ? err.message : err).split("\n").slice(0, 6).join("\n"));
  if (asked.length) console.error(`fell back to instance metadata: ${asked.join(", ")}; failed after ${ms} ms`);
  else console.error(`failed after ${ms} ms without asking instance metadata`);
  process.exit(1);
}

main().catch((e) => {
  console.error("objstore: " + (e && e.stack ? e.stack : e));
  process.exit(1);
});
