/**
 * The synced state of a search, as the Python side (hbmagic/widget.py,
 * hbmagic/board.py) writes it, and the store the views draw from.
 */

/** What happened to one evaluation. */
export type CellState =
  | 'queued'
  | 'running'
  | 'done'
  | 'promoted'
  | 'stopped'
  | 'failed'
  | 'skipped';

export const FINAL_STATES: ReadonlySet<CellState> = new Set<CellState>([
  'done',
  'promoted',
  'stopped',
  'failed',
  'skipped'
]);

/** One evaluation, keyed "iteration:s:rung:index". */
export interface ICell {
  /** The trial (absent for a planned cell no trial reached yet). */
  t?: number | null;
  s: CellState;
  /** The metric: a number, or "nan" / "inf" / "-inf". */
  v?: number | string | null;
  /** [rank, of, cutoff] for a stopped or promoted trial. */
  r?: [number | null, number | null, number | string | null];
  /** The end of the error of a failed evaluation. */
  e?: string;
}

export interface IRung {
  /** Planned evaluations (null for ASHA: as many as arrive). */
  n: number | null;
  budget: number;
}

export interface IRow {
  key: string;
  iteration: number;
  s: number;
  rungs: IRung[];
}

export interface IPlan {
  title: string;
  algorithm: string;
  eta: number;
  iterations: number;
  maxBudget: number;
  minBudget: number;
  budgets: number[];
  rows: IRow[];
  evaluations: number | null;
  resource: number | null;
}

export interface IInfo {
  study: string;
  metric: string | null;
  mode: 'min' | 'max';
  seed: number;
  space: { [name: string]: string };
  slots: string[];
  resumed: boolean;
  reused: number;
}

export interface ITrial {
  /** Its configuration. */
  c: { [name: string]: unknown };
  /** Iteration and bracket. */
  i: number;
  b: number;
  /** The state of its latest cell, and that cell's key. */
  s: CellState;
  k: string;
}

export type Point = [number, number];

export interface ILane {
  label: string;
  device: string;
  trial: number | null;
  rung: number;
  budget: number;
  start: number;
  step: number;
  since: number;
  key: string | null;
  /** Keys of the cells this lane finished last, newest first. */
  hist: string[];
}

export interface IGpu {
  used: number;
  total: number;
  util: number | null;
}

export interface IBest {
  trial: number;
  value: number;
  budget: number;
  config: { [name: string]: unknown };
  key?: string | null;
}

export interface ISummary {
  status: string;
  message: string;
  evaluations: number;
  planned: number | null;
  resource: number;
  resourcePlanned: number | null;
  failures: number;
  running: number;
  elapsed: number;
  eta: number | null;
  best: IBest | null;
  metric: string | null;
  mode: 'min' | 'max';
}

/** A batch of changes: cells, trials and curves replace, points go at their index. */
export interface IDelta {
  seq: number;
  cells: { [key: string]: ICell };
  trials: { [id: string]: ITrial };
  points: { [id: string]: [number, Point[]] };
  curves?: { [id: string]: Point[] };
  /** A new search: drop the cells, trials and curves held so far. */
  reset?: boolean;
}

/** The traits of HyperbandWidget, as the model holds them. */
export interface ISearchTraits {
  plan: IPlan | Record<string, never>;
  info: IInfo | Record<string, never>;
  cells: { [key: string]: ICell };
  trials: { [id: string]: ITrial };
  curves: { [id: string]: Point[] };
  lanes: ILane[];
  gpus: { [device: string]: IGpu };
  summary: ISummary | Record<string, never>;
  /** The latest batch, as JSON text (an IDelta). */
  delta: string;
}

/** The board as JSON in the output (application/vnd.hbmagic.search+json). */
export interface ISnapshot {
  model_id: string;
  version: string;
  state: {
    seq: number;
    plan: IPlan | Record<string, never>;
    info: IInfo | Record<string, never>;
    cells: { [key: string]: ICell };
    trials: { [id: string]: ITrial };
    curves: { [id: string]: Point[] };
    lanes: ILane[];
    gpus?: { [device: string]: IGpu };
    summary: ISummary | Record<string, never>;
  };
}

/** What changed since the last drawing. */
export interface IChange {
  layout: boolean;
  cells: Set<string>;
  curves: Set<string>;
  lanes: boolean;
  summary: boolean;
}

export function emptyChange(): IChange {
  return {
    layout: false,
    cells: new Set(),
    curves: new Set(),
    lanes: false,
    summary: false
  };
}

export type TraitName = keyof ISearchTraits;

/**
 * The state one view draws from. The widget's model shares its attribute
 * objects with it (deltas change them in place); the output renderer fills
 * it from the snapshot in the output, then from the kernel's messages.
 */
export class SearchStore {
  plan: IPlan | null = null;
  info: IInfo | null = null;
  cells: { [key: string]: ICell } = {};
  trials: { [id: string]: ITrial } = {};
  curves: { [id: string]: Point[] } = {};
  lanes: ILane[] = [];
  gpus: { [device: string]: IGpu } = {};
  summary: ISummary | null = null;
  /** The last batch applied. */
  seq = 0;
  /** When the summary arrived (ms), to count the elapsed time on. */
  summaryAt = Date.now();

  /** Take a trait's new value; returns what to redraw. */
  set(name: TraitName, value: unknown, change: IChange): void {
    switch (name) {
      case 'plan':
        this.plan = isEmpty(value) ? null : (value as IPlan);
        change.layout = true;
        break;
      case 'info':
        this.info = isEmpty(value) ? null : (value as IInfo);
        change.layout = true;
        break;
      case 'cells':
        this.cells = (value as ISearchTraits['cells']) || {};
        change.layout = true;
        break;
      case 'trials':
        this.trials = (value as ISearchTraits['trials']) || {};
        change.layout = true;
        break;
      case 'curves':
        this.curves = (value as ISearchTraits['curves']) || {};
        Object.keys(this.curves).forEach(id => change.curves.add(id));
        break;
      case 'lanes':
        this.lanes = (value as ILane[]) || [];
        change.lanes = true;
        break;
      case 'gpus':
        this.gpus = (value as ISearchTraits['gpus']) || {};
        change.lanes = true;
        break;
      case 'summary':
        this.summary = isEmpty(value) ? null : (value as ISummary);
        this.summaryAt = Date.now();
        change.summary = true;
        break;
      case 'delta':
        this.applyDelta(parseDelta(value), change);
        break;
    }
  }

  /** Apply a batch of changes (a batch older than what the store holds changes nothing). */
  applyDelta(delta: IDelta | null | undefined, change: IChange): void {
    if (!delta || typeof delta.seq !== 'number' || delta.seq <= this.seq) {
      return;
    }
    this.seq = delta.seq;
    if (delta.reset) {
      for (const table of [this.cells, this.trials, this.curves]) {
        for (const key of Object.keys(table)) {
          delete (table as { [key: string]: unknown })[key];
        }
      }
      change.layout = true;
    }
    for (const key of Object.keys(delta.cells || {})) {
      this.cells[key] = delta.cells[key];
      change.cells.add(key);
      const t = delta.cells[key].t;
      if (t !== null && t !== undefined) {
        change.curves.add(String(t));
      }
    }
    for (const id of Object.keys(delta.trials || {})) {
      this.trials[id] = delta.trials[id];
      change.curves.add(id);
    }
    for (const id of Object.keys(delta.curves || {})) {
      const points = delta.curves![id];
      const curve = this.curves[id] || (this.curves[id] = []);
      curve.length = 0;
      points.forEach(point => curve.push(point));
      change.curves.add(id);
    }
    for (const id of Object.keys(delta.points || {})) {
      const [first, points] = delta.points[id];
      const curve = this.curves[id] || (this.curves[id] = []);
      points.forEach((point, i) => {
        curve[first + i] = point;
      });
      change.curves.add(id);
    }
  }

  /** Everything from a snapshot (the JSON in the output). */
  load(state: ISnapshot['state'], change: IChange): void {
    this.plan = isEmpty(state.plan) ? null : (state.plan as IPlan);
    this.info = isEmpty(state.info) ? null : (state.info as IInfo);
    this.cells = { ...(state.cells || {}) };
    this.trials = { ...(state.trials || {}) };
    this.curves = {};
    for (const id of Object.keys(state.curves || {})) {
      this.curves[id] = state.curves[id].slice();
    }
    this.lanes = state.lanes || [];
    this.gpus = state.gpus || {};
    this.summary = isEmpty(state.summary) ? null : (state.summary as ISummary);
    this.summaryAt = Date.now();
    this.seq = state.seq || 0;
    change.layout = change.lanes = change.summary = true;
    Object.keys(this.curves).forEach(id => change.curves.add(id));
  }

  get metric(): string {
    return this.summary?.metric || this.info?.metric || 'value';
  }

  get mode(): 'min' | 'max' {
    return this.summary?.mode || this.info?.mode || 'min';
  }

  get running(): boolean {
    return !this.summary || this.summary.status === 'running' || this.summary.status === 'starting';
  }
}

/** A batch from the `delta` trait: JSON text (or, from older kernels, an object). */
export function parseDelta(value: unknown): IDelta | null {
  if (typeof value === 'string') {
    return value ? (JSON.parse(value) as IDelta) : null;
  }
  return (value as IDelta) || null;
}

function isEmpty(value: unknown): boolean {
  return !value || (typeof value === 'object' && Object.keys(value as object).length === 0);
}

/** A metric value as a number (NaN for text such as "nan"). */
export function numeric(value: unknown): number {
  if (typeof value === 'number') {
    return value;
  }
  if (typeof value === 'string') {
    return Number(value);
  }
  return NaN;
}
