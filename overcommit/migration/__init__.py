"""Live migration: pre-copy and post-copy transfer of a running guest, and evacuations.

- :mod:`.transfer`: the guest side. `MigrationOrder` (what the driver tells a guest each
  window: destination, mode, bandwidth, limits) and `MigrationState` (one migration in
  progress): round 1 of every allocated frame, dirty tracking from the guest's own touches,
  the next pre-copy rounds, auto-converge throttling, stop-and-copy downtime or abort, and
  post-copy remote faults with the background push. Called from `GuestModel` every epoch.
- :mod:`.remote`: post-copy's pages at the source. The store requests (`RemoteOps`, routed
  to the source host's Redis) that write the pages left there at switch-over and read back
  those faulted on or pushed, each read checked against the version the guest wrote.
- :mod:`.planner`: the cluster side. `Migrations` takes `migrate` and `evacuate` events,
  admits each migration at its destination (admission room, boot allocation, deadline),
  picks evacuation destinations by the placement policy, shares each host's NIC among the
  migrations it carries, moves guests when the guest side says so, and records every
  migration's outcome, including those cut short by host failures.

All belong to the model layer: they import only `overcommit.nodes`, the record codec and
numpy, never `overcommit.cluster`, Ray or Redis; the driver hands the planner its controller
and runtime, and the runners drive `remote`'s requests.
"""
