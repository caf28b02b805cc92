/**
 * HyperbandModel and HyperbandView: the ipywidgets side of the live board
 * (Python: hbmagic.widget.HyperbandWidget).
 */

import { DOMWidgetModel, DOMWidgetView, ISerializers } from '@jupyter-widgets/base';

import { ISearchTraits, SearchStore, TraitName, emptyChange, IChange, parseDelta } from './state';
import { SearchView } from './view';
import { MODULE_NAME, MODULE_VERSION } from './version';

const TRAITS: TraitName[] = ['plan', 'info', 'cells', 'trials', 'curves', 'lanes', 'gpus', 'summary', 'delta'];

/**
 * The model keeps the whole board in its synced attributes. Changes arrive
 * as small batches in `delta`, applied in place to `cells`, `trials` and
 * `curves` (never sent back: the kernel owns the state).
 */
export class HyperbandModel extends DOMWidgetModel {
  static serializers: ISerializers = { ...DOMWidgetModel.serializers };
  static model_name = 'HyperbandModel';
  static model_module = MODULE_NAME;
  static model_module_version = MODULE_VERSION;
  static view_name = 'HyperbandView';
  static view_module = MODULE_NAME;
  static view_module_version = MODULE_VERSION;

  store!: SearchStore;

  defaults(): any {
    const traits: ISearchTraits = {
      plan: {},
      info: {},
      cells: {},
      trials: {},
      curves: {},
      lanes: [],
      gpus: {},
      summary: {},
      delta: ''
    };
    return {
      ...super.defaults(),
      _model_name: HyperbandModel.model_name,
      _model_module: HyperbandModel.model_module,
      _model_module_version: HyperbandModel.model_module_version,
      _view_name: HyperbandModel.view_name,
      _view_module: HyperbandModel.view_module,
      _view_module_version: HyperbandModel.view_module_version,
      ...traits
    };
  }

  initialize(attributes: any, options: any): void {
    super.initialize(attributes, options);
    this.store = new SearchStore();
    const change = emptyChange();
    for (const name of TRAITS) {
      if (name !== 'delta') {
        this.store.set(name, this.get(name), change);
      }
    }
    // The last batch is already in the state: only later ones apply.
    const delta = parseDelta(this.get('delta'));
    this.store.seq = delta && typeof delta.seq === 'number' ? delta.seq : 0;
    this.on('change', this.onChange, this);
    // A page reloaded mid-search builds this model from whichever update came first after asking
    // for the state, and loses the updates sent before this model listened: ask for it all again.
    if (this.comm_live) {
      this.send({ event: 'resync' }, {});
    }
  }

  private onChange(): void {
    const change = emptyChange();
    const changed = this.changedAttributes() || {};
    for (const name of TRAITS) {
      if (name in changed && name !== 'delta') {
        this.store.set(name, this.get(name), change);
      }
    }
    if ('delta' in changed) {
      this.store.set('delta', this.get('delta'), change);
    }
    this.trigger('hbmagic:change', change);
  }
}

/** The view: the drawing of the store, and a Stop button that interrupts the kernel. */
export class HyperbandView extends DOMWidgetView {
  private search: SearchView | null = null;

  render(): void {
    const model = this.model as HyperbandModel;
    this.el.classList.add('hbm-widget');
    this.search = new SearchView(model.store, { stop: () => this.interrupt() });
    this.el.appendChild(this.search.node);
    this.listenTo(model, 'hbmagic:change', (change: IChange) => this.search?.update(change));
  }

  /** A running cell handles no widget message, so Stop interrupts the kernel from here. */
  private async interrupt(): Promise<void> {
    const kernel = (this.model.widget_manager as any).kernel;
    if (!kernel || typeof kernel.interrupt !== 'function') {
      throw new Error('no kernel to interrupt');
    }
    await kernel.interrupt();
  }

  remove(): any {
    this.search?.dispose();
    this.search = null;
    return super.remove();
  }
}
