// The local stack's connection strings, exactly as `dbctl local up` wrote them to .env: the pytest driver
// (tests/integration/test_app_toolchain.py) passes them through unchanged. No TLS option is added here.
export function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run the suite through tests/integration/test_app_toolchain.py`);
  }
  return value;
}

export const env = {
  get DATABASE_URL() {
    return required("DATABASE_URL");
  },
  get DIRECT_URL() {
    return required("DIRECT_URL");
  },
  get DATABASE_READ_URL() {
    return required("DATABASE_READ_URL");
  },
  get SHADOW_DATABASE_URL() {
    return required("SHADOW_DATABASE_URL");
  },
};
