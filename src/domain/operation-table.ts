/**
 * The operations a caller can start, one row each: the client method (the key), the /api/v2
 * route and the `volumectl` command. The faces take their paths and command names from here,
 * and test/unit/operation-faces.test.ts fails when one face lacks a row. A new operation
 * (resize, say) is a row here, a request schema in ./operations.ts, a workflow of library steps
 * (workflows/volume-steps.ts) and its activities (docs/sagas.md, "Adding an operation").
 * Dependency-free.
 */
export const OPERATIONS = {
  create: {
    summary: 'Create a CloudStack volume with its persistent name (left detached)',
    v2: { method: 'POST', path: '/volumes' },
    cli: 'create',
  },
  attach: {
    summary: 'Attach a volume to the appliance (name it, map it, export it)',
    v2: { method: 'POST', path: '/volumes/:id/attach' },
    cli: 'attach',
  },
  detach: {
    summary: 'Detach a volume from the appliance (its export stays, answering errors)',
    v2: { method: 'POST', path: '/volumes/:id/detach' },
    cli: 'detach',
  },
  failover: {
    summary: 'Give a volume to the migrated VM, as a data disk or as its root disk',
    v2: { method: 'POST', path: '/volumes/:id/failover' },
    cli: 'failover',
  },
  failback: {
    summary: 'Bring a volume back from the migrated VM (same export name)',
    v2: { method: 'POST', path: '/volumes/:id/failback' },
    cli: 'failback',
  },
  delete: {
    summary: 'Delete a volume (CloudStack delete is the point of no return)',
    v2: { method: 'DELETE', path: '/volumes/:id' },
    cli: 'delete',
  },
  vm: {
    summary: "Fail a whole VM's volumes over to the migrated VM, or back, all at once (each its own saga)",
    v2: { method: 'POST', path: '/vms/:id/operations' },
    cli: 'vm',
  },
} as const satisfies Record<
  string,
  { summary: string; v2: { method: 'POST' | 'DELETE'; path: string }; cli: string }
>;

export type StartableOperation = keyof typeof OPERATIONS;
export const STARTABLE_OPERATIONS = Object.keys(OPERATIONS) as StartableOperation[];
