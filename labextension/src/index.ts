/**
 * The hbmagic JupyterLab extension: registers the HyperbandModel and
 * HyperbandView widget classes, and the renderer of the board in outputs.
 */

import { IJupyterWidgetRegistry } from '@jupyter-widgets/base';
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';

import { searchOutputFactory } from './output';
import { MODULE_NAME, MODULE_VERSION } from './version';
import { HyperbandModel, HyperbandView } from './widget';

/** Ahead of the widget view's renderer (-10): the board shows even before the widget's model is known. */
const OUTPUT_RANK = -20;

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'hbmagic:plugin',
  description: 'The live Hyperband board of the %%hyperband cell magic.',
  requires: [IJupyterWidgetRegistry, IRenderMimeRegistry],
  autoStart: true,
  activate: (_app: JupyterFrontEnd, widgets: IJupyterWidgetRegistry, rendermime: IRenderMimeRegistry) => {
    widgets.registerWidget({
      name: MODULE_NAME,
      version: MODULE_VERSION,
      exports: { HyperbandModel, HyperbandView }
    });
    rendermime.addFactory(searchOutputFactory, OUTPUT_RANK);
  }
};

export default plugin;
export { HyperbandModel, HyperbandView };
export * from './version';
