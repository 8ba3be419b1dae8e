// Every workflow type the control worker registers. Workflow code is bundled by the Temporal
// worker and runs in its deterministic sandbox: no I/O, clocks or randomness of its own.
export { createVolume } from './create.js';
export { attachVolume } from './attach.js';
export { detachVolume } from './detach.js';
export { failoverVolume } from './failover.js';
export { failbackVolume } from './failback.js';
export { deleteVolume } from './delete.js';
export { repairVolume } from './repair.js';
export { vmOperation, vmProgressQuery } from './vm.js';
export { reconcileAppliance } from './reconcile.js';
export { progressQuery, operatorUpdate } from './saga.js';
