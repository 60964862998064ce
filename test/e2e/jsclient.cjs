// AWS SDK for JavaScript v3 client of the end-to-end suite (scripts/e2e).
// Credentials come only from the default provider chain.
//
//   NODE_PATH=<dir>/node_modules node jsclient.cjs version
//   NODE_PATH=<dir>/node_modules node jsclient.cjs roundtrip BUCKET KEY FILE
//
// The endpoint comes from E2E_ENDPOINT; addressing is path-style.
"use strict";
const fs = require("fs");
const crypto = require("crypto");

async function main() {
  const args = process.argv.slice(2);
  if (args[0] === "version") {
    console.log("@aws-sdk/client-s3 " + require("@aws-sdk/client-s3/package.json").version + ", node " + process.version);
    return;
  }
  if (args[0] !== "roundtrip" || args.length !== 4) throw new Error("usage: jsclient.cjs version|roundtrip BUCKET KEY FILE");
  const { S3Client, ListObjectsV2Command, PutObjectCommand, GetObjectCommand } = require("@aws-sdk/client-s3");
  const [, Bucket, Key, file] = args;
  const c = new S3Client({ endpoint: process.env.E2E_ENDPOINT, forcePathStyle: true });
  const data = fs.readFileSync(file);
  await c.send(new ListObjectsV2Command({ Bucket }));
  await c.send(new PutObjectCommand({ Bucket, Key, Body: data }));
  const out = await c.send(new GetObjectCommand({ Bucket, Key }));
  const got = Buffer.from(await out.Body.transformToByteArray());
  if (!got.equals(data)) {
    const h = (b) => crypto.createHash("sha256").update(b).digest("hex");
    throw new Error(`downloaded ${got.length} bytes (sha256 ${h(got)}), uploaded ${data.length} (sha256 ${h(data)})`);
  }
  const creds = await c.config.credentials();
  console.log(`ok key=${creds.accessKeyId} bytes=${data.length}`);
}

main().catch((e) => {
  console.error("jsclient: " + (e && e.stack ? e.stack : e));
  process.exit(1);
});
