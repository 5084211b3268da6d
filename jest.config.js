// One jest run over every workspace package. @swc/jest strips types (no type
// checking: `npm run typecheck` does that) and turns the ESM-only
// dependencies listed below into CommonJS so the whole suite runs in CJS.
const esmOnly = ["jose", "p-retry", "is-network-error", "@nats-io"].join("|");

const packages = [
  ["contracts", "libs/contracts"],
  ["platform", "libs/platform"],
  ["lora-formats", "libs/lora-formats"],
  ["testkit", "libs/testkit"],
  ["upload-client", "libs/upload-client"],
  ["dev-stack", "tools/dev-stack"],
  ["ci-checks", "tools/ci-checks"],
  ["lora-registry", "services/lora-registry"],
  ["blob-gateway", "services/blob-gateway"],
  ["machine-cache", "services/machine-cache"],
  ["lora-cli", "tools/lora-cli"],
];

const moduleNameMapper = {
  "^(\\.{1,2}/.*)\\.js$": "$1",
  ...Object.fromEntries(packages.map(([name, dir]) => [`^@emprops/${name}$`, `<rootDir>/${dir}/src/index.ts`])),
  // lora-formats' browser-safe entry point (package.json "exports")
  "^@emprops/lora-formats/head$": "<rootDir>/libs/lora-formats/src/head.ts",
};

const swc = [
  "@swc/jest",
  {
    jsc: { parser: { syntax: "typescript" }, target: "es2023" },
    module: { type: "commonjs" },
  },
];

module.exports = {
  globalSetup: "<rootDir>/libs/testkit/src/jest-global-setup.ts",
  globalTeardown: "<rootDir>/libs/testkit/src/jest-global-teardown.ts",
  projects: packages.map(([name, dir]) => ({
    displayName: name,
    rootDir: __dirname,
    roots: [`<rootDir>/${dir}`],
    testMatch: [`<rootDir>/${dir}/tests/**/*.test.ts`],
    testEnvironment: "node",
    transform: { "^.+\\.(t|j|mj|cj)s$": swc },
    transformIgnorePatterns: [`/node_modules/(?!(${esmOnly})/)`],
    moduleNameMapper,
  })),
  testTimeout: 60_000,
};
