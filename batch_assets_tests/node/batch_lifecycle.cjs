// One batch lifecycle against the local Batch API, driven by the official Node `openai` SDK.
// Run by batch_assets_tests/test_node_sdk.py with NODE_PATH pointing at a cached install of the SDK;
// prints one JSON object with what each call returned, for the Python test to check.
"use strict";
const fs = require("node:fs");
const OpenAI = require("openai");

const TERMINAL = ["completed", "failed", "expired", "cancelled"];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitTerminal(client, id) {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const batch = await client.batches.retrieve(id);
    if (TERMINAL.includes(batch.status)) return batch;
    if (Date.now() > deadline) throw new Error(`batch ${id} still ${batch.status}`);
    await sleep(250);
  }
}

async function refused(call) {
  try {
    await call();
    return null;
  } catch (error) {
    if (!(error instanceof OpenAI.APIError)) throw error;
    return { kind: error.constructor.name, status: error.status, code: error.code ?? null,
             param: error.param ?? null, message: error.message };
  }
}

async function main() {
  const client = new OpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: process.env.OPENAI_API_KEY, maxRetries: 0 });
  const out = {};
  const file = await client.files.create({ file: fs.createReadStream(process.env.RESPONSES_JSONL), purpose: "batch" });
  out.file = { id: file.id, purpose: file.purpose, bytes: file.bytes, expires_at: file.expires_at,
               created_at: file.created_at };
  const batch = await client.batches.create({ input_file_id: file.id, endpoint: "/v1/responses",
                                              completion_window: "24h", metadata: { client: "node" } });
  out.created = { status: batch.status, endpoint: batch.endpoint, metadata: batch.metadata };
  const done = await waitTerminal(client, batch.id);
  out.done = { status: done.status, counts: done.request_counts, output_file_id: done.output_file_id };
  const content = await (await client.files.content(done.output_file_id)).text();
  out.output_lines = content.trim().split("\n").map((line) => JSON.parse(line));

  const many = await client.files.create({ file: fs.createReadStream(process.env.EMBEDDINGS_JSONL), purpose: "batch" });
  const second = await client.batches.create({ input_file_id: many.id, endpoint: "/v1/embeddings",
                                               completion_window: "24h" });
  out.cancelling = (await client.batches.cancel(second.id)).status;
  out.cancelled = (await waitTerminal(client, second.id)).status;

  const files = [];  // pages of one: the SDK follows `after` itself
  for await (const f of client.files.list({ purpose: "batch", limit: 1 })) files.push(f.id);
  out.listed_files = files;
  const batches = [];
  for await (const b of client.batches.list({ limit: 1 })) batches.push(b.id);
  out.listed_batches = batches;
  out.ids = { files: [file.id, many.id], batches: [batch.id, second.id] };

  out.missing_batch = await refused(() => client.batches.retrieve("batch_missing"));
  out.missing_file = await refused(() => client.files.retrieve("file-missing"));
  out.bad_endpoint = await refused(() => client.batches.create({ input_file_id: file.id, endpoint: "/v1/nope",
                                                                 completion_window: "24h" }));
  out.deleted = (await client.files.delete(file.id)).deleted;
  console.log(JSON.stringify(out));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
