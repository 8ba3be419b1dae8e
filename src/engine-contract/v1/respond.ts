import type { FastifyReply } from 'fastify';
import type { OperationHandle } from '../../client/index.js';
import { listOperations } from '../../db/operations.js';
import type { OperationType } from '../../domain/operations.js';
import type { ApiDeps } from '../../api/deps.js';
import { attentionOf, pendingOldOperation, toOldOperation } from './operation.js';

/** Every accepted v1 mutation: 201 with the operation as the old daemon showed it. */
export async function createdOperation(
  deps: ApiDeps,
  reply: FastifyReply,
  type: OperationType,
  vmId: string | null,
  request: Record<string, unknown>,
  h: Promise<OperationHandle>,
) {
  const handle = await h;
  const [row] = await listOperations(deps.db, { operationId: handle.operationId });
  return reply
    .status(201)
    .send(
      row
        ? toOldOperation(row, await attentionOf(deps.db, row))
        : pendingOldOperation({ id: handle.operationId, type, volumeId: handle.volumeId, vmId, request }),
    );
}
