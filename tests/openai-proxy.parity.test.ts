import OpenAI from "openai";

const BASE = process.env.OPENAI_BASE || "https://connect.chitty.cc/v1";
const API_KEY = process.env.OPENAI_API_KEY!;

describe("OpenAI-compatible proxy parity", () => {
  const client = new OpenAI({ apiKey: API_KEY, baseURL: BASE });

  test("non-stream completion parity", async () => {
    const res = await client.chat.completions.create({
      model: "gpt-4o",
      messages: [{ role: "user", content: "Say hello in 3 words." }],
      temperature: 0,
    });

    // Verify OpenAI response format
    expect(res.id).toBeTruthy();
    expect(res.id).toMatch(/^chatcmpl-/);
    expect(res.object).toBe("chat.completion");
    expect(res.created).toBeGreaterThan(0);
    expect(res.model).toBeTruthy();

    // Verify message content
    expect(res.choices).toHaveLength(1);
    expect(res.choices[0].message.role).toBe("assistant");
    expect(res.choices[0].message.content).toMatch(/hello/i);
    expect(res.choices[0].finish_reason).toBe("stop");

    // Verify token usage
    expect(res.usage).toBeDefined();
    expect(res.usage.prompt_tokens).toBeGreaterThan(0);
    expect(res.usage.completion_tokens).toBeGreaterThan(0);
    expect(res.usage.total_tokens).toBeGreaterThan(0);

    console.log("✓ Non-streaming completion parity verified");
  }, 30000);

  test("streaming parity", async () => {
    const stream = await client.chat.completions.create({
      model: "gpt-4o",
      messages: [{ role: "user", content: "Count to 3." }],
      stream: true,
    });

    let deltaCount = 0;
    let content = "";

    for await (const chunk of stream) {
      // Verify chunk format
      expect(chunk.object).toBe("chat.completion.chunk");
      expect(chunk.id).toBeTruthy();
      expect(chunk.choices).toHaveLength(1);

      const delta = chunk.choices[0].delta;
      if (delta.content) {
        content += delta.content;
        deltaCount++;
      }
    }

    expect(deltaCount).toBeGreaterThan(0);
    expect(content.length).toBeGreaterThan(0);

    console.log("✓ Streaming parity verified");
  }, 30000);

  test("embeddings parity", async () => {
    const res = await client.embeddings.create({
      model: "text-embedding-3-small",
      input: "hello world",
    });

    // Verify embeddings response format
    expect(res.object).toBe("list");
    expect(res.data).toHaveLength(1);
    expect(res.data[0].object).toBe("embedding");
    expect(res.data[0].embedding).toBeDefined();
    expect(res.data[0].embedding.length).toBeGreaterThan(100);
    expect(res.data[0].index).toBe(0);

    // Verify usage
    expect(res.usage).toBeDefined();
    expect(res.usage.prompt_tokens).toBeGreaterThan(0);
    expect(res.usage.total_tokens).toBeGreaterThan(0);

    console.log("✓ Embeddings parity verified");
  }, 30000);

  test("error handling parity", async () => {
    // Test invalid model
    await expect(
      client.chat.completions.create({
        model: "invalid-model-name",
        messages: [{ role: "user", content: "test" }],
      })
    ).rejects.toThrow();

    console.log("✓ Error handling parity verified");
  }, 10000);

  test("temperature and parameters parity", async () => {
    const res = await client.chat.completions.create({
      model: "gpt-4o",
      messages: [{ role: "user", content: "Test message" }],
      temperature: 0.5,
      max_tokens: 50,
      top_p: 0.9,
      frequency_penalty: 0.1,
      presence_penalty: 0.1,
    });

    expect(res.choices[0].message.content).toBeTruthy();

    console.log("✓ Parameter passing parity verified");
  }, 30000);
});
