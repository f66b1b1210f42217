// Times each of N sequential cached chat calls through the official Node SDK, after warm-up calls, and prints
// one JSON line: the per-call figures behind the playbook's 1,000-call total (bench/node.py runs it).
import OpenAI from "openai";

const calls = Number(process.argv[2] ?? 2000);
const warmup = Number(process.argv[3] ?? 300);
const client = new OpenAI({ apiKey: process.env.OPENAI_API_KEY, baseURL: process.env.OPENAI_BASE });
const request = { model: "gpt-4o", messages: [{ role: "user", content: "Return the string OK." }], temperature: 0 };

for (let i = 0; i < warmup; i++) await client.chat.completions.create(request);
const ms = [];
for (let i = 0; i < calls; i++) {
  const started = performance.now();
  await client.chat.completions.create(request);
  ms.push(performance.now() - started);
}
const sorted = [...ms].sort((a, b) => a - b);
const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
console.log(JSON.stringify({
  calls,
  mean: ms.reduce((a, b) => a + b, 0) / calls,
  p50: at(0.5),
  p90: at(0.9),
  p99: at(0.99),
  over_2ms: ms.filter((v) => v > 2).length,
}));
