import { initial } from './0001_initial.js';

export interface SqlMigration {
  name: string;
  up: string[];
  down: string[];
}

/** In order. Never edit a migration that has shipped: add a new one. */
export const migrations: SqlMigration[] = [initial];
