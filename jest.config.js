/** Jest runs the playbook's parity suite through ts-jest; the cost-metering script is run by ts-node, not Jest. */
module.exports = {
  preset: "ts-jest",
  testEnvironment: "node",
  setupFiles: ["<rootDir>/jest.setup.js"],
  roots: ["<rootDir>/tests"],
  testMatch: ["**/*.test.ts"],
  testPathIgnorePatterns: ["/node_modules/", "/tests/cost-metering\\.test\\.ts$"],
};
