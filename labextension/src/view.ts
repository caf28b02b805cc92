/**
 * The drawing of a search: summary, bracket board, device lanes and learning
 * curves, from a SearchStore. Plain DOM and SVG; colors come from
 * JupyterLab's theme variables (style/index.css), the metric's scale from
 * viridis, readable on light and dark themes.
 */

import {
  CellState,
  ICell,
  IChange,
  ILane,
  IRow,
  Point,
  SearchStore,
  emptyChange,
  numeric
} from './state';

const SVG = 'http://www.w3.org/2000/svg';

/** Viridis, 9 stops: worst (dark) to best (yellow); the same as hbmagic/board_html.py. */
const VIRIDIS: [number, number, number][] = [
  [68, 1, 84],
  [71, 44, 122],
  [59, 81, 139],
  [44, 113, 142],
  [33, 144, 141],
  [39, 173, 129],
  [92, 200, 99],
  [170, 220, 50],
  [253, 231, 37]
];

/** The color of t in [0, 1] (1 is best). */
export function metricColor(t: number): string {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS.length - 2);
  const f = x - i;
  const a = VIRIDIS[i];
  const b = VIRIDIS[i + 1];
  const c = [0, 1, 2].map(k => Math.round(a[k] + (b[k] - a[k]) * f));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

export function short(value: unknown): string {
  if (typeof value === 'number') {
    if (Number.isInteger(value)) {
      return String(value);
    }
    return Number(value.toPrecision(4)).toString();
  }
  if (typeof value === 'string') {
    return `'${value}'`;
  }
  return String(value);
}

function amount(value: number | null | undefined): string {
  if (value === null || value === undefined || !isFinite(value)) {
    return '?';
  }
  if (Number.isInteger(value)) {
    return value.toLocaleString('en-US');
  }
  return Number(value.toPrecision(4)).toLocaleString('en-US');
}

export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) {
    return '?';
  }
  const total = Math.max(0, Math.round(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const pad = (n: number) => String(n).padStart(2, '0');
  return h ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
}

function config(c: { [name: string]: unknown } | undefined): string {
  return Object.entries(c || {})
    .map(([k, v]) => `${k}=${short(v)}`)
    .join(', ');
}

/**
 * A trial's curve as a function of the resource: a step reported again (a
 * promoted trial that retrained from scratch) keeps its latest value, as the
 * Result's metrics by step do.
 */
export function curve(points: Point[]): Point[] {
  const byStep = new Map<number, number>();
  for (const p of points) {
    if (p) {
      byStep.set(p[0], p[1]);
    }
  }
  return Array.from(byStep.entries()).sort((a, b) => a[0] - b[0]);
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls: string,
  parent?: HTMLElement,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = cls;
  if (text !== undefined) {
    node.textContent = text;
  }
  if (parent) {
    parent.appendChild(node);
  }
  return node;
}

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  cls: string,
  parent: SVGElement
): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG, tag);
  node.setAttribute('class', cls);
  parent.appendChild(node);
  return node;
}

/** What the view can ask of its host. */
export interface IActions {
  /** Interrupt the kernel (the Stop button); absent when no kernel is reachable. */
  stop?: () => Promise<void>;
}

interface IGroup {
  cells: HTMLElement;
  count: number;
  planned: number | null;
  row: IRow;
  rung: number;
}

const CURVE_INTERVAL = 250; // ms between two drawings of the curves at least
const HISTORY_SYMBOLS: { [state: string]: string } = {
  done: '✓',
  promoted: '▲',
  stopped: '■',
  failed: '✗',
  queued: '↺',
  running: '…',
  skipped: '·'
};

/** The search, drawn. Call update() with what changed; it draws at the next animation frame. */
export class SearchView {
  readonly node: HTMLDivElement;
  private store: SearchStore;
  private actions: IActions;
  private title: HTMLDivElement;
  private stopButton: HTMLButtonElement;
  private statusLine: HTMLDivElement;
  private message: HTMLDivElement;
  private bestLine: HTMLDivElement;
  private board: HTMLDivElement;
  private legend: HTMLDivElement;
  private lanesBox: HTMLDivElement;
  private curvesBox: HTMLDivElement;
  private curvesSvg: SVGSVGElement;
  private curvesAxes: SVGGElement;
  private curvesLines: SVGGElement;
  private tip: HTMLDivElement;
  private cellEls = new Map<string, HTMLElement>();
  private groups = new Map<string, IGroup>();
  private lines = new Map<string, SVGPolylineElement>();
  private pending: IChange = emptyChange();
  private curvesPending = new Set<string>();
  private frame = 0;
  private ticker = 0;
  private curvesTimer = 0;
  private curvesDrawn = 0;
  private scale = { low: 0, high: 1 };
  private curveKey = '';
  private resize: ResizeObserver | null = null;
  private stopping = false;
  private disposed = false;

  constructor(store: SearchStore, actions: IActions = {}) {
    this.store = store;
    this.actions = actions;
    const root = (this.node = el('div', 'hbm-root'));
    const head = el('div', 'hbm-head', root);
    this.title = el('div', 'hbm-title', head);
    this.stopButton = el('button', 'hbm-stop', head, 'Stop');
    this.stopButton.type = 'button';
    this.stopButton.title =
      'Interrupt the kernel: no new evaluation starts, running ones stop at their next report; the partial result is kept';
    this.stopButton.addEventListener('click', () => this.onStop());
    this.statusLine = el('div', 'hbm-summary', root);
    this.message = el('div', 'hbm-message', root);
    this.bestLine = el('div', 'hbm-best', root);
    this.board = el('div', 'hbm-board', root);
    this.legend = el('div', 'hbm-legend', root);
    const panels = el('div', 'hbm-panels', root);
    const lanes = el('div', 'hbm-panel hbm-lanes-panel', panels);
    el('div', 'hbm-panel-title', lanes, 'Device lanes');
    this.lanesBox = el('div', 'hbm-lanes', lanes);
    const curves = el('div', 'hbm-panel hbm-curves-panel', panels);
    el('div', 'hbm-panel-title', curves, 'Learning curves');
    this.curvesBox = el('div', 'hbm-curves', curves);
    this.curvesSvg = document.createElementNS(SVG, 'svg');
    this.curvesSvg.setAttribute('class', 'hbm-curves-svg');
    this.curvesBox.appendChild(this.curvesSvg);
    this.curvesAxes = svg('g', 'hbm-axes', this.curvesSvg);
    this.curvesLines = svg('g', 'hbm-lines', this.curvesSvg);
    this.tip = el('div', 'hbm-tip', root);
    this.tip.hidden = true;
    this.board.addEventListener('mouseover', event => this.onHover(event));
    this.board.addEventListener('mouseleave', () => (this.tip.hidden = true));
    if (typeof ResizeObserver !== 'undefined') {
      this.resize = new ResizeObserver(() => this.update({ ...emptyChange(), curves: new Set(['*']) }));
      this.resize.observe(this.curvesBox);
    }
    this.ticker = window.setInterval(() => this.tick(), 1000);
    const all = emptyChange();
    all.layout = all.lanes = all.summary = true;
    Object.keys(store.curves).forEach(id => all.curves.add(id));
    this.update(all);
  }

  /** Draw what changed, at the next animation frame. */
  update(change: IChange): void {
    const p = this.pending;
    p.layout = p.layout || change.layout;
    p.lanes = p.lanes || change.lanes;
    p.summary = p.summary || change.summary;
    change.cells.forEach(k => p.cells.add(k));
    change.curves.forEach(k => p.curves.add(k));
    if (!this.frame && !this.disposed) {
      this.frame = requestAnimationFrame(() => this.draw());
    }
  }

  /** Draw now (also used where animation frames do not run, such as a hidden tab). */
  draw(): void {
    this.frame = 0;
    if (this.disposed) {
      return;
    }
    const change = this.pending;
    this.pending = emptyChange();
    if (change.layout) {
      this.drawHeader();
      this.buildBoard();
    } else if (change.cells.size) {
      this.drawCells(change.cells);
    }
    if (change.summary || change.layout) {
      this.drawSummary();
      this.drawUntouched();
    }
    if (change.lanes || change.cells.size || change.layout) {
      this.drawLanes();
    }
    if (change.curves.size || change.layout || change.summary) {
      change.curves.forEach(id => this.curvesPending.add(id));
      if (change.layout || change.summary) {
        this.curvesPending.add('*');
      }
      this.scheduleCurves();
    }
  }

  dispose(): void {
    this.disposed = true;
    if (this.frame) {
      cancelAnimationFrame(this.frame);
    }
    window.clearInterval(this.ticker);
    window.clearTimeout(this.curvesTimer);
    this.resize?.disconnect();
    this.node.remove();
  }

  // -- header and summary ----------------------------------------------------------------

  private drawHeader(): void {
    const plan = this.store.plan;
    this.title.textContent = plan ? plan.title : 'hbmagic: waiting for the search to start…';
  }

  private drawSummary(): void {
    const store = this.store;
    const s = store.summary;
    const running = store.running;
    this.node.dataset.status = s ? s.status : 'starting';
    const canStop = running && !!this.actions.stop && !!s;
    this.stopButton.hidden = !canStop;
    this.stopButton.disabled = this.stopping;
    this.stopButton.textContent = this.stopping ? 'Stopping…' : 'Stop';
    if (!s) {
      this.statusLine.textContent = '';
      this.bestLine.textContent = '';
      this.message.textContent = '';
      return;
    }
    this.statusLine.textContent = '';
    const part = (cls: string, text: string) => el('span', `hbm-stat ${cls}`, this.statusLine, text);
    part('hbm-status', s.status);
    part('hbm-evals', `${amount(s.evaluations)}${s.planned ? ' / ' + amount(s.planned) : ''} evaluations`);
    part(
      'hbm-resource',
      `${amount(s.resource)}${s.resourcePlanned ? ' / ' + amount(s.resourcePlanned) : ''} resource`
    );
    part('hbm-elapsed', `${duration(this.elapsed())} elapsed`);
    if (running && s.eta !== null && s.eta !== undefined) {
      part('hbm-eta', `~${duration(this.left())} left`);
    }
    if (s.running) {
      part('hbm-running', `${s.running} running`);
    }
    if (s.failures) {
      part('hbm-failures', `${s.failures} failed`);
    }
    this.message.textContent = s.message || '';
    this.message.hidden = !s.message;
    const direction = store.mode === 'min' ? 'minimizing' : 'maximizing';
    const best = s.best;
    this.bestLine.textContent = '';
    el('span', 'hbm-best-label', this.bestLine, `best (${direction} ${store.metric}): `);
    if (best) {
      el('span', 'hbm-best-value', this.bestLine, short(best.value));
      el('span', 'hbm-best-where', this.bestLine, ` (trial ${best.trial}, budget ${amount(best.budget)}) `);
      el('span', 'hbm-best-config', this.bestLine, config(best.config));
    } else {
      el('span', 'hbm-best-none', this.bestLine, 'none yet');
    }
  }

  private elapsed(): number {
    const s = this.store.summary;
    if (!s) {
      return 0;
    }
    const since = this.store.running ? (Date.now() - this.store.summaryAt) / 1000 : 0;
    return s.elapsed + since;
  }

  private left(): number | null {
    const s = this.store.summary;
    if (!s || s.eta === null || s.eta === undefined) {
      return null;
    }
    return Math.max(0, s.eta - (Date.now() - this.store.summaryAt) / 1000);
  }

  private tick(): void {
    if (!this.store.running || !this.store.summary) {
      return;
    }
    const elapsed = this.statusLine.querySelector('.hbm-elapsed');
    if (elapsed) {
      elapsed.textContent = `${duration(this.elapsed())} elapsed`;
    }
    const eta = this.statusLine.querySelector('.hbm-eta');
    if (eta) {
      eta.textContent = `~${duration(this.left())} left`;
    }
  }

  private async onStop(): Promise<void> {
    if (!this.actions.stop || this.stopping) {
      return;
    }
    this.stopping = true;
    this.drawSummary();
    try {
      await this.actions.stop();
    } catch (error) {
      console.error('hbmagic: could not interrupt the kernel', error);
      this.stopping = false;
      this.drawSummary();
    }
  }

  // -- the board ----------------------------------------------------------------------------

  private buildBoard(): void {
    const plan = this.store.plan;
    this.board.textContent = '';
    this.cellEls.clear();
    this.groups.clear();
    if (!plan) {
      return;
    }
    const counts = new Map<string, number>();
    for (const key of Object.keys(this.store.cells)) {
      const [it, s, rung, index] = key.split(':');
      const group = `${it}:${s}:${rung}`;
      counts.set(group, Math.max(counts.get(group) || 0, Number(index) + 1));
    }
    const width = Math.max(0, ...plan.rows.map(r => r.rungs.length));
    const most: number[] = new Array(width).fill(1);
    for (const row of plan.rows) {
      row.rungs.forEach((rung, i) => {
        const n = Math.max(rung.n || 0, counts.get(`${row.key}:${i}`) || 0);
        most[i] = Math.max(most[i], n);
      });
    }
    const columns = most.map(m => `minmax(3.2em, ${Math.sqrt(m).toFixed(3)}fr)`).join(' ');
    this.board.style.gridTemplateColumns = `max-content ${columns}`;
    el('div', 'hbm-board-head', this.board, 'bracket');
    for (let i = 0; i < width; i++) {
      el('div', 'hbm-board-head', this.board, `rung ${i}`);
    }
    const iterations = plan.iterations > 1 && plan.algorithm !== 'asha';
    for (const row of plan.rows) {
      const label = iterations ? `${row.iteration + 1}·s=${row.s}` : `s=${row.s}`;
      const head = el('div', 'hbm-row-label', this.board, label);
      head.title = iterations ? `iteration ${row.iteration + 1}, bracket s=${row.s}` : `bracket s=${row.s}`;
      row.rungs.forEach((rung, i) => {
        const box = el('div', 'hbm-rung', this.board);
        box.dataset.row = row.key;
        box.dataset.rung = String(i);
        box.dataset.planned = rung.n === null ? '' : String(rung.n);
        box.dataset.budget = String(rung.budget);
        const caption = rung.n === null ? `r=${amount(rung.budget)}` : `${rung.n} × ${amount(rung.budget)}`;
        el('div', 'hbm-rung-caption', box, caption);
        const cells = el('div', 'hbm-cells', box);
        const group: IGroup = { cells, count: 0, planned: rung.n, row, rung: i };
        this.groups.set(`${row.key}:${i}`, group);
        this.grow(group, Math.max(rung.n || 0, counts.get(`${row.key}:${i}`) || 0));
      });
      for (let i = row.rungs.length; i < width; i++) {
        el('div', 'hbm-rung hbm-rung-none', this.board);
      }
    }
    this.rescale();
    this.cellEls.forEach((node, key) => this.paint(key, node));
    this.drawLegend();
  }

  private grow(group: IGroup, count: number): void {
    for (let i = group.count; i < count; i++) {
      const key = `${group.row.key}:${group.rung}:${i}`;
      const node = el('i', 'hbm-cell', group.cells);
      node.dataset.key = key;
      node.dataset.state = 'queued';
      this.cellEls.set(key, node);
    }
    group.count = Math.max(group.count, count);
  }

  private drawCells(keys: Set<string>): void {
    const scaleChanged = this.rescale();
    keys.forEach(key => {
      let node = this.cellEls.get(key);
      if (!node) {
        const [it, s, rung, index] = key.split(':');
        const group = this.groups.get(`${it}:${s}:${rung}`);
        if (!group) {
          return;
        }
        this.grow(group, Number(index) + 1);
        node = this.cellEls.get(key);
      }
      if (node && !scaleChanged) {
        this.paint(key, node);
      }
    });
    if (scaleChanged) {
      this.cellEls.forEach((node, key) => this.paint(key, node));
      this.drawLegend();
    }
  }

  /** Cells the plan announces that no trial reached: skipped once the search completed. */
  private drawUntouched(): void {
    const ended = this.store.summary?.status === 'completed';
    this.cellEls.forEach((node, key) => {
      if (!this.store.cells[key]) {
        node.dataset.state = ended ? 'skipped' : 'queued';
      }
    });
  }

  private state(key: string): CellState {
    const cell = this.store.cells[key];
    if (cell) {
      return cell.s;
    }
    return this.store.summary?.status === 'completed' ? 'skipped' : 'queued';
  }

  private paint(key: string, node: HTMLElement): void {
    const cell = this.store.cells[key];
    node.dataset.state = this.state(key);
    if (cell && cell.v !== undefined && cell.v !== null) {
      node.style.setProperty('--hbm-c', this.color(cell.v));
    } else {
      node.style.removeProperty('--hbm-c');
    }
    if (cell && cell.t !== null && cell.t !== undefined) {
      node.dataset.trial = String(cell.t);
    }
  }

  /** Recompute the shared scale over every evaluated cell; true when it moved. */
  private rescale(): boolean {
    let low = Infinity;
    let high = -Infinity;
    for (const key in this.store.cells) {
      const v = numeric(this.store.cells[key].v);
      if (isFinite(v)) {
        low = Math.min(low, v);
        high = Math.max(high, v);
      }
    }
    if (low === Infinity) {
      low = 0;
      high = 1;
    }
    const moved = low !== this.scale.low || high !== this.scale.high;
    this.scale = { low, high };
    return moved;
  }

  private goodness(value: unknown): number {
    const v = numeric(value);
    if (!isFinite(v)) {
      return 0;
    }
    const span = this.scale.high - this.scale.low;
    const t = span > 0 ? (v - this.scale.low) / span : 0.5;
    return this.store.mode === 'min' ? 1 - t : t;
  }

  private color(value: unknown): string {
    return metricColor(this.goodness(value));
  }

  private drawLegend(): void {
    this.legend.textContent = '';
    const item = (state: CellState, text: string, value?: number) => {
      const box = el('span', 'hbm-legend-item', this.legend);
      const swatch = el('i', 'hbm-cell', box);
      swatch.dataset.state = state;
      if (value !== undefined) {
        swatch.style.setProperty('--hbm-c', this.color(value));
      }
      el('span', '', box, text);
    };
    const best = this.store.mode === 'min' ? this.scale.low : this.scale.high;
    const worst = this.store.mode === 'min' ? this.scale.high : this.scale.low;
    item('queued', 'queued');
    item('running', 'running');
    item('done', 'done', best);
    item('promoted', 'promoted', best);
    item('stopped', 'stopped', best);
    item('failed', 'failed');
    const scale = el('span', 'hbm-legend-item hbm-legend-scale', this.legend);
    el('span', '', scale, `${this.store.metric}: ${short(worst)}`);
    const bar = el('span', 'hbm-gradient', scale);
    const stops = [0, 1, 2, 3, 4, 5, 6, 7, 8].map(i => metricColor(i / 8)).join(', ');
    bar.style.background = `linear-gradient(to right, ${stops})`;
    el('span', '', scale, `${short(best)} (best)`);
  }

  // -- hover ---------------------------------------------------------------------------------

  private onHover(event: MouseEvent): void {
    const target = event.target as HTMLElement;
    if (!target || !target.classList.contains('hbm-cell') || !target.dataset.key) {
      return;
    }
    this.tip.textContent = '';
    for (const line of this.describe(target.dataset.key)) {
      el('div', 'hbm-tip-line', this.tip, line);
    }
    this.tip.hidden = false;
    const root = this.node.getBoundingClientRect();
    const cell = target.getBoundingClientRect();
    const tipWidth = Math.min(this.tip.offsetWidth, root.width);
    const left = Math.max(0, Math.min(cell.left - root.left, root.width - tipWidth));
    this.tip.style.left = `${left}px`;
    this.tip.style.top = `${cell.bottom - root.top + 4}px`;
  }

  /** The hover text of a cell: trial, budget, state and why, metric, configuration. */
  describe(key: string): string[] {
    const [it, s, rung] = key.split(':').map(Number);
    const row = this.store.plan?.rows.find(r => r.iteration === it && r.s === s);
    const budget = row ? row.rungs[rung]?.budget : undefined;
    const cell: ICell | undefined = this.store.cells[key];
    const where = `bracket s=${s}, rung ${rung}, budget ${amount(budget)}`;
    if (!cell || cell.t === null || cell.t === undefined) {
      return [`${this.state(key)}: ${where}`];
    }
    const trial = this.store.trials[String(cell.t)];
    const lines = [`trial ${cell.t} · ${where}`];
    let state: string = cell.s;
    if (cell.s === 'stopped' && cell.r) {
      const cutoff = cell.r[2] === null ? 'nothing was promoted' : `cutoff ${short(numeric(cell.r[2]))}`;
      state = `stopped: rank ${cell.r[0]} of ${cell.r[1]} at this rung (${cutoff})`;
    } else if (cell.s === 'promoted' && cell.r) {
      const cutoff = cell.r[2] === null || cell.r[2] === undefined ? '' : `, cutoff ${short(numeric(cell.r[2]))}`;
      state = `promoted to rung ${rung + 1}: rank ${cell.r[0]}${cutoff}`;
    } else if (cell.s === 'done' && row && rung === row.rungs.length - 1) {
      state = 'done: reached the bracket’s last rung';
    }
    lines.push(state);
    if (cell.v !== undefined && cell.v !== null) {
      lines.push(`${this.store.metric} = ${short(numeric(cell.v))}`);
    }
    if (cell.e) {
      const error = cell.e.trim().split('\n');
      lines.push(`error: ${error[error.length - 1]}`);
    }
    if (trial) {
      lines.push(config(trial.c));
    }
    return lines;
  }

  // -- lanes ---------------------------------------------------------------------------------

  private drawLanes(): void {
    const lanes = this.store.lanes;
    const box = this.lanesBox;
    while (box.children.length > lanes.length) {
      box.lastChild?.remove();
    }
    while (box.children.length < lanes.length) {
      const lane = el('div', 'hbm-lane', box);
      el('div', 'hbm-lane-label', lane);
      el('div', 'hbm-lane-trial', lane);
      const bar = el('div', 'hbm-bar', lane);
      el('div', 'hbm-bar-fill', bar);
      el('div', 'hbm-hist', lane);
      el('div', 'hbm-gpu', lane);
    }
    lanes.forEach((lane, i) => this.drawLane(box.children[i] as HTMLElement, lane, i));
  }

  private drawLane(node: HTMLElement, lane: ILane, slot: number): void {
    const [label, trialText, bar, hist, gpu] = Array.from(node.children) as HTMLElement[];
    node.dataset.slot = String(slot);
    node.dataset.busy = lane.trial === null ? 'false' : 'true';
    label.textContent = lane.label;
    label.title = lane.device;
    const fill = bar.firstChild as HTMLElement;
    if (lane.trial === null) {
      trialText.textContent = this.store.running ? 'idle' : '—';
      fill.style.width = '0%';
    } else {
      const span = lane.budget - lane.start;
      const done = span > 0 ? (lane.step - lane.start) / span : 0;
      const progress = Math.max(0, Math.min(1, done));
      trialText.textContent = `trial ${lane.trial} · rung ${lane.rung} · ${amount(lane.step)} / ${amount(lane.budget)}`;
      fill.style.width = `${(progress * 100).toFixed(1)}%`;
    }
    const stats = this.store.gpus[lane.device];
    gpu.hidden = !stats;
    if (stats) {
      const gib = (b: number) => (b / 2 ** 30).toFixed(1);
      const util = stats.util === null ? '' : ` · ${Math.round(stats.util)}% busy`;
      gpu.textContent = `GPU ${gib(stats.used)} / ${gib(stats.total)} GiB${util}`;
    }
    hist.textContent = '';
    for (const key of lane.hist) {
      const cell = this.store.cells[key];
      const state = cell ? cell.s : 'queued';
      const chip = el('span', 'hbm-chip', hist, HISTORY_SYMBOLS[state] || '?');
      chip.dataset.state = state;
      const value = cell && cell.v !== undefined && cell.v !== null ? numeric(cell.v) : null;
      if (value !== null) {
        chip.style.setProperty('--hbm-c', this.color(value));
      }
      chip.title = cell ? `trial ${cell.t}: ${state}${value !== null ? ' ' + short(value) : ''}` : key;
    }
  }

  // -- learning curves -------------------------------------------------------------------

  private scheduleCurves(): void {
    if (this.curvesTimer || this.disposed) {
      return;
    }
    const wait = Math.max(0, this.curvesDrawn + CURVE_INTERVAL - Date.now());
    this.curvesTimer = window.setTimeout(() => {
      this.curvesTimer = 0;
      this.curvesDrawn = Date.now();
      this.drawCurves();
    }, wait);
  }

  private drawCurves(): void {
    const ids = this.curvesPending;
    this.curvesPending = new Set();
    const store = this.store;
    const width = Math.max(160, this.curvesBox.clientWidth || 320);
    const height = 200;
    const m = { left: 46, right: 10, top: 16, bottom: 26 };
    // Domains: resource on x (log when the rung budgets are geometric), the metric on y.
    let xLow = Infinity;
    let xHigh = -Infinity;
    let yLow = Infinity;
    let yHigh = -Infinity;
    for (const id in store.curves) {
      for (const point of store.curves[id]) {
        if (!point) {
          continue;
        }
        xLow = Math.min(xLow, point[0]);
        xHigh = Math.max(xHigh, point[0]);
        yLow = Math.min(yLow, point[1]);
        yHigh = Math.max(yHigh, point[1]);
      }
    }
    const budgets = store.plan?.budgets || [];
    for (const b of budgets) {
      xLow = Math.min(xLow, b);
      xHigh = Math.max(xHigh, b);
    }
    if (!isFinite(xLow)) {
      xLow = 0;
      xHigh = 1;
    }
    if (!isFinite(yLow)) {
      yLow = 0;
      yHigh = 1;
    }
    const log = xLow > 0 && xHigh / xLow >= 9;
    const fx = (x: number) => (log ? Math.log(Math.max(x, xLow)) : x);
    const xSpan = fx(xHigh) - fx(xLow) || 1;
    const x0 = fx(xLow) - xSpan * 0.03; // a little room: first reports sit off the axis
    const x1 = fx(xLow) + xSpan * 1.01;
    const pad = (yHigh - yLow) * 0.05 || Math.abs(yHigh) * 0.05 || 1;
    const y0 = yLow - pad;
    const y1 = yHigh + pad;
    const px = (x: number) => m.left + ((fx(x) - x0) / (x1 - x0)) * (width - m.left - m.right);
    const py = (y: number) => m.top + (1 - (y - y0) / (y1 - y0)) * (height - m.top - m.bottom);
    const key = [width, x0, x1, y0, y1, log].join('|');
    const all = ids.has('*') || key !== this.curveKey;
    this.curveKey = key;
    this.curvesSvg.setAttribute('width', String(width));
    this.curvesSvg.setAttribute('height', String(height));
    this.curvesSvg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    if (all) {
      this.drawAxes(budgets, px, py, [y0, y1], width, height, m);
    }
    const best = store.summary?.best ? String(store.summary.best.trial) : null;
    const todo = all ? Object.keys(store.curves) : Array.from(ids).filter(id => id !== '*');
    for (const id of todo) {
      const points = store.curves[id];
      if (!points) {
        continue;
      }
      let line = this.lines.get(id);
      if (!line) {
        line = svg('polyline', 'hbm-curve', this.curvesLines);
        line.dataset.trial = id;
        this.lines.set(id, line);
      }
      const drawn = curve(points).map(p => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`);
      if (drawn.length === 1) {
        drawn.push(drawn[0]); // one report so far: a dot (a zero-length line with round caps)
      }
      line.setAttribute('points', drawn.join(' '));
      line.classList.toggle('hbm-dot', drawn.length === 2 && drawn[0] === drawn[1]);
      const state = store.trials[id]?.s;
      line.classList.toggle('hbm-faded', state === 'stopped' || state === 'failed');
      line.classList.toggle('hbm-active', state === 'running');
    }
    this.lines.forEach((line, id) => {
      const isBest = id === best;
      if (line.classList.contains('hbm-curve-best') !== isBest) {
        line.classList.toggle('hbm-curve-best', isBest);
      }
    });
    if (best && this.lines.has(best)) {
      this.curvesLines.appendChild(this.lines.get(best)!); // drawn last: on top
    }
    this.curvesBox.dataset.curves = String(this.lines.size);
  }

  private drawAxes(
    budgets: number[],
    px: (x: number) => number,
    py: (y: number) => number,
    [y0, y1]: [number, number],
    width: number,
    height: number,
    m: { left: number; right: number; top: number; bottom: number }
  ): void {
    const axes = this.curvesAxes;
    while (axes.firstChild) {
      axes.firstChild.remove();
    }
    const line = (cls: string, x1: number, y1_: number, x2: number, y2: number) => {
      const l = svg('line', cls, axes);
      l.setAttribute('x1', x1.toFixed(1));
      l.setAttribute('y1', y1_.toFixed(1));
      l.setAttribute('x2', x2.toFixed(1));
      l.setAttribute('y2', y2.toFixed(1));
      return l;
    };
    const text = (cls: string, x: number, y: number, value: string, anchor = 'middle') => {
      const t = svg('text', cls, axes);
      t.setAttribute('x', x.toFixed(1));
      t.setAttribute('y', y.toFixed(1));
      t.setAttribute('text-anchor', anchor);
      t.textContent = value;
      return t;
    };
    line('hbm-axis', m.left, height - m.bottom, width - m.right, height - m.bottom);
    line('hbm-axis', m.left, m.top, m.left, height - m.bottom);
    // Rung budgets: dashed verticals, labelled below the axis.
    let lastX = -Infinity;
    for (const b of budgets) {
      const x = px(b);
      line('hbm-rung-mark', x, m.top, x, height - m.bottom).dataset.budget = String(b);
      if (x - lastX > 22) {
        text('hbm-tick', x, height - m.bottom + 12, amount(b));
        lastX = x;
      }
    }
    for (let i = 0; i <= 3; i++) {
      const v = y0 + ((y1 - y0) * i) / 3;
      const y = py(v);
      line('hbm-grid', m.left, y, width - m.right, y);
      text('hbm-tick', m.left - 4, y + 3, short(Number(v.toPrecision(3))), 'end');
    }
    text('hbm-axis-title', (m.left + width - m.right) / 2, height - 2, 'resource (rung budgets dashed)');
    text('hbm-axis-title', m.left, m.top - 5, this.store.metric, 'start');
  }
}

