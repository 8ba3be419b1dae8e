// Lint rules: typescript-eslint's recommended type-aware set, plus the rule that keeps
// workflow code deterministic-friendly (no floating promises) everywhere.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const PRODUCT_BOUNDARY = {
  group: ['**/harness/**', '**/test/**', '**/bench/**'],
  message: 'The product never imports the harness, the tests or the benchmarks.',
};

export default tseslint.config(
  { ignores: ['node_modules/**', '.data/**', 'coverage/**', 'dist/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // node:test's test()/describe() return promises the runner tracks itself.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-floating-promises': 'off' },
  },
  {
    // The product (what a release ships) never imports the harness, the tests or the benchmarks.
    files: ['src/**/*.ts', 'activities/**/*.ts', 'workflows/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [PRODUCT_BOUNDARY] }] },
  },
  {
    // Workflow code runs in Temporal's deterministic sandbox: no Node built-ins, no I/O libraries.
    files: ['workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            PRODUCT_BOUNDARY,
            { group: ['node:*', 'fs', 'child_process', 'net', 'os'], message: 'Workflows must not do I/O.' },
            { group: ['mysql2', 'mysql2/*', 'execa', 'pino'], message: 'Workflows must not do I/O.' },
          ],
        },
      ],
    },
  },
  {
    // A saga is a list of library steps: only the step library runs one (docs/sagas.md).
    files: ['workflows/**/*.ts'],
    ignores: ['workflows/volume-steps.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector:
            "CallExpression[callee.type='MemberExpression'][callee.property.name=/^(step|writeStep)$/]",
          message:
            'Saga steps live in the step library (workflows/volume-steps.ts): call one of its functions.',
        },
      ],
    },
  },
);
