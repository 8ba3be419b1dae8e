import { initial } from './0001_initial.js';
import { namingAndCreate } from './0002_naming_and_create.js';
import { engineView } from './0003_engine_view.js';

/** Which server runs the migration, where the two spell a thing differently (collations). */
export type ServerFlavor = 'mariadb' | 'mysql';
export type SqlStatement = string | ((server: ServerFlavor) => string);

export interface SqlMigration {
  name: string;
  up: SqlStatement[];
  down: SqlStatement[];
}

/** In order. Never edit a migration that has shipped: add a new one. */
export const migrations: SqlMigration[] = [initial, namingAndCreate, engineView];
