/** The package's name and version, from package.json (the Python side's _model_module_version must match). */

// @ts-ignore: package.json is outside rootDir; the bundler resolves it
const data = require('../../package.json');

export const MODULE_NAME: string = data.name;
export const MODULE_VERSION: string = data.version;
