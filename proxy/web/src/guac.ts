// guacamole-common-js as published on npm (1.5.0) is Apache's modules concatenated, with the
// `Guacamole` namespace as the ES module's default export; the DefinitelyTyped declarations
// describe the same namespace as named exports. This module joins the two.
import type * as GuacamoleTypes from "guacamole-common-js";
import GuacamoleDefault from "guacamole-common-js";

const Guacamole = GuacamoleDefault as typeof GuacamoleTypes;
export default Guacamole;
export type { GuacamoleTypes };
