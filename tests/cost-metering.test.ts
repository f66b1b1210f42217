import OpenAI from "openai";

const client = new OpenAI({
  apiKey: process.env.OPENAI_API_KEY!,
  baseURL: process.env.OPENAI_BASE!
});

async function run(n: number) {
  for (let i = 0; i < n; i++) {
    await client.chat.completions.create({
      model: "gpt-4o",
      messages: [{ role: "user", content: "Return the string OK." }],
      temperature: 0,
    });
  }
}

(async () => {
  console.log("Cost Metering Smoke Test");
  console.log("========================\n");

  // Single call
  console.time("1-call");
  await run(1);
  console.timeEnd("1-call");

  console.log("\nNow making 1000 calls...");

  // 1000 calls (should hit cache after first)
  console.time("1000-calls");
  await run(1000);
  console.timeEnd("1000-calls");

  console.log("\n✓ Check proxy metrics at: https://registry.chitty.cc/metrics");
  console.log("  - Cost per call (should be ~$0.02 for first, $0 for cached)");
  console.log("  - Cache hit rate (should be ~99.9% for 1000 calls)");
  console.log("  - P95 latency (should be <50ms for cached requests)");
})();
