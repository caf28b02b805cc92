/**
 * The renderer of the board in an output (application/vnd.hbmagic.search+json).
 *
 * The output of a search carries the widget view, this JSON board, HTML and
 * text. JupyterLab with this extension prefers this renderer: it draws the
 * board from the JSON at once, then hands over to the real widget view as
 * soon as the notebook's widget manager knows the widget's model. Until then
 * (a page reloaded while the cell still runs: the kernel answers no widget
 * request before the cell ends), it follows the widget's updates straight
 * from the kernel's messages, so the board stays live, and Stop still
 * interrupts the kernel.
 */

import { MimeModel } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Message } from '@lumino/messaging';
import { Panel, Widget } from '@lumino/widgets';

import { ISnapshot, SearchStore, TraitName, emptyChange } from './state';
import { SearchView } from './view';

export const SEARCH_MIME = 'application/vnd.hbmagic.search+json';
export const WIDGET_MIME = 'application/vnd.jupyter.widget-view+json';
const TRAITS = new Set<string>(['plan', 'info', 'cells', 'trials', 'curves', 'lanes', 'gpus', 'summary', 'delta']);

/** The parts of JupyterLab's objects this renderer uses (found on its ancestors). */
interface IRendermimeLike {
  mimeTypes: ReadonlyArray<string>;
  createRenderer(mimeType: string): IRenderMime.IRenderer;
  getFactory(mimeType: string): IRenderMime.IRendererFactory | undefined;
}

interface ISessionLike {
  session?: { kernel?: { interrupt(): Promise<void> } | null } | null;
  iopubMessage: {
    connect(fn: (sender: unknown, msg: any) => void, thisArg?: unknown): boolean;
    disconnect(fn: (sender: unknown, msg: any) => void, thisArg?: unknown): boolean;
  };
}

export class SearchOutput extends Panel implements IRenderMime.IRenderer {
  private store = new SearchStore();
  private view: SearchView | null = null;
  private modelId = '';
  private widgetRenderer: IRenderMime.IRenderer | null = null;
  private watcher: MutationObserver | null = null;
  private sessionContext: ISessionLike | null = null;
  private rendermime: IRendermimeLike | null = null;
  private factory: IRenderMime.IRendererFactory | undefined;
  private poll = 0;
  private live = false;

  constructor(_options: IRenderMime.IRendererOptions) {
    super();
    this.addClass('hbm-output');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const data = model.data[SEARCH_MIME] as unknown as ISnapshot | undefined;
    if (!data || !data.state) {
      return;
    }
    this.modelId = data.model_id;
    if (this.live) {
      return; // the widget view shows the live state
    }
    const change = emptyChange();
    if (!this.view) {
      this.store.load(data.state, change);
      this.view = new SearchView(this.store, { stop: () => this.interrupt() });
      this.node.appendChild(this.view.node);
    } else if ((data.state.seq || 0) >= this.store.seq) {
      this.store.load(data.state, change);
    }
    this.view.update(change);
    if (this.isAttached) {
      this.connect();
    }
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    this.connect();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.disconnect();
    this.view?.dispose();
    this.view = null;
    super.dispose();
  }

  /** Look for the widget manager's renderer and the kernel once attached in a notebook. */
  private connect(): void {
    if (this.live || this.rendermime || !this.modelId) {
      return;
    }
    const rendermime = this.ancestor<IRendermimeLike>('rendermime');
    const session = this.ancestor<ISessionLike>('sessionContext');
    if (session && !this.sessionContext) {
      this.sessionContext = session;
      session.iopubMessage.connect(this.onMessage, this);
    }
    if (!rendermime || rendermime.mimeTypes.indexOf(WIDGET_MIME) < 0) {
      return; // no widget manager here: the board from the JSON is what there is
    }
    this.rendermime = rendermime;
    this.makeWidgetRenderer();
    // Until the kernel is ready, the notebook's widget renderer has no widget manager; the manager's
    // plugin then replaces the factory (and updates only the renderers it knows): follow it.
    this.poll = window.setInterval(() => {
      if (this.live || this.isDisposed) {
        window.clearInterval(this.poll);
      } else if (this.rendermime && this.rendermime.getFactory(WIDGET_MIME) !== this.factory) {
        this.makeWidgetRenderer();
      }
    }, 500);
  }

  private makeWidgetRenderer(): void {
    const rendermime = this.rendermime!;
    this.watcher?.disconnect();
    this.widgetRenderer?.dispose();
    this.factory = rendermime.getFactory(WIDGET_MIME);
    const renderer = rendermime.createRenderer(WIDGET_MIME);
    this.widgetRenderer = renderer;
    renderer.addClass('hbm-widget-host');
    renderer.node.style.display = 'none';
    this.addWidget(renderer);
    this.watcher = new MutationObserver(() => this.check());
    this.watcher.observe(renderer.node, { childList: true });
    const view = new MimeModel({
      data: { [WIDGET_MIME]: { model_id: this.modelId, version_major: 2, version_minor: 0 } }
    });
    void renderer.renderModel(view).then(
      () => this.check(),
      () => undefined
    );
  }

  /** Hand over to the widget view once it is there. */
  private check(): void {
    const renderer = this.widgetRenderer as (IRenderMime.IRenderer & { widgets?: ReadonlyArray<Widget> }) | null;
    if (this.live || !renderer || !renderer.widgets || renderer.widgets.length === 0) {
      return;
    }
    this.live = true;
    renderer.node.style.display = '';
    this.disconnect();
    this.view?.dispose();
    this.view = null;
    this.node.dataset.live = 'widget';
  }

  private disconnect(): void {
    window.clearInterval(this.poll);
    this.watcher?.disconnect();
    this.watcher = null;
    this.sessionContext?.iopubMessage.disconnect(this.onMessage, this);
  }

  /** The widget's updates, read from the kernel's messages while its model is not available here. */
  private onMessage(_sender: unknown, msg: any): void {
    if (this.live || !this.view || msg?.header?.msg_type !== 'comm_msg') {
      return;
    }
    const content = msg.content || {};
    const data = content.data || {};
    if (content.comm_id !== this.modelId || (data.method !== 'update' && data.method !== 'echo_update')) {
      return;
    }
    const change = emptyChange();
    const state = data.state || {};
    for (const name of Object.keys(state)) {
      if (TRAITS.has(name)) {
        this.store.set(name as TraitName, state[name], change);
      }
    }
    this.node.dataset.live = 'messages';
    this.view.update(change);
  }

  private async interrupt(): Promise<void> {
    const kernel = this.sessionContext?.session?.kernel;
    if (!kernel) {
      throw new Error('no kernel to interrupt');
    }
    await kernel.interrupt();
  }

  private ancestor<T>(name: string): T | null {
    let widget: Widget | null = this.parent;
    while (widget) {
      const value = (widget as any)[name];
      if (value) {
        return value as T;
      }
      widget = widget.parent;
    }
    return null;
  }
}

export const searchOutputFactory: IRenderMime.IRendererFactory = {
  safe: false,
  mimeTypes: [SEARCH_MIME],
  createRenderer: options => new SearchOutput(options)
};
