/**
 * The playbook points `npm test` at a gateway with OPENAI_API_BASE (the variable the pre-1.0 SDKs read); the
 * parity suite reads OPENAI_BASE. Either works here; OPENAI_BASE wins when both are set.
 */
if (!process.env.OPENAI_BASE && process.env.OPENAI_API_BASE) {
  process.env.OPENAI_BASE = process.env.OPENAI_API_BASE;
}
