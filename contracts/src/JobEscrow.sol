// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {WorkerRegistry} from "./WorkerRegistry.sol";

/// @title JobEscrow
/// @notice Holds a client's deposit for one inference job, pays the workers and the
///         coordinator in a single settlement transaction per job, refunds the client if
///         the coordinator does not settle by the deadline, and slashes a worker whose own
///         signed receipt contradicts another worker's receipt for the same input.
/// @dev Time is split cleanly by the deadline: `settle` only at or before it, `refund`
///      only after it, so a client and a coordinator can never race each other.
///      Every payment is a credit pulled with `withdraw()`, except `refund`, which pays the
///      calling client directly. Without forced ether (selfdestruct), the balance equals
///      the open deposits plus the unwithdrawn credits.
///
///      Receipts are EIP-712 typed data, domain {name: "shardnet", version: "1", chainId,
///      verifyingContract: this escrow}, type
///      `Receipt(bytes32 jobId,uint64 shardId,bytes32 modelSha256,bytes32 inputDigest,bytes32 outputDigest,address worker)`.
contract JobEscrow is EIP712, ReentrancyGuard {
    // ─────────────────────────────────────────────────────────────────────────
    // Types
    // ─────────────────────────────────────────────────────────────────────────

    enum JobStatus {
        None,
        Open,
        Settled,
        Refunded
    }

    /// @notice One job. `deposit` is what the client locked; `priceCap` (<= deposit) is
    ///         the most that settlement may pay out of it.
    struct Job {
        address client;
        uint64 deadline;
        JobStatus status;
        address coordinator;
        uint128 deposit;
        uint128 priceCap;
    }

    /// @notice A worker's signed statement that it ran `modelSha256` on the input with
    ///         digest `inputDigest` for shard `shardId` of job `jobId` and got `outputDigest`.
    struct Receipt {
        bytes32 jobId;
        uint64 shardId;
        bytes32 modelSha256;
        bytes32 inputDigest;
        bytes32 outputDigest;
        address worker;
    }

    // ─────────────────────────────────────────────────────────────────────────
    // Errors
    // ─────────────────────────────────────────────────────────────────────────

    error ZeroAddress();
    error InvalidSlashBps(uint256 slashBps);
    error ZeroDeposit();
    error PriceCapAboveDeposit(uint256 priceCap, uint256 deposit);
    error DeadlineNotInFuture(uint64 deadline, uint256 nowTs);
    error JobExists(bytes32 jobId);
    error UnknownJob(bytes32 jobId);
    error JobNotOpen(bytes32 jobId, JobStatus status);
    error NotCoordinator(address caller);
    error NotClient(address caller);
    error DeadlinePassed(uint64 deadline, uint256 nowTs);
    error DeadlineNotPassed(uint64 deadline, uint256 nowTs);
    error LengthMismatch(uint256 workers, uint256 amounts);
    error WorkerNotStaked(address worker);
    error OverPriceCap(uint256 total, uint256 priceCap);
    error NothingToWithdraw(address payee);
    error TransferFailed(address to, uint256 amount);
    error NotAConflict();
    error SameWorker(address worker);
    error EvidenceAlreadyUsed(bytes32 offendingDigest);
    error InvalidSignature(address worker);
    error WorkerNotRegistered(address worker);
    error NothingToSlash(address worker);

    // ─────────────────────────────────────────────────────────────────────────
    // Events
    // ─────────────────────────────────────────────────────────────────────────

    event JobOpened(
        bytes32 indexed jobId,
        address indexed client,
        address indexed coordinator,
        uint64 deadline,
        uint256 deposit,
        uint256 priceCap
    );
    /// @param total What the client was charged: sum of worker amounts + coordinator fee.
    /// @param clientRefund deposit - total, credited back to the client.
    event JobSettled(
        bytes32 indexed jobId, bytes32 resultsRoot, uint256 total, uint256 coordinatorFee, uint256 clientRefund
    );
    event WorkerPaid(bytes32 indexed jobId, address indexed worker, uint256 amount);
    event JobRefunded(bytes32 indexed jobId, address indexed client, uint256 amount);
    event Withdrawn(address indexed payee, uint256 amount);
    event WorkerSlashed(bytes32 indexed jobId, address indexed worker, uint256 amount, bytes32 offendingDigest);

    // ─────────────────────────────────────────────────────────────────────────
    // Storage
    // ─────────────────────────────────────────────────────────────────────────

    /// @notice keccak256 of the EIP-712 Receipt type string.
    bytes32 public constant RECEIPT_TYPEHASH = keccak256(
        "Receipt(bytes32 jobId,uint64 shardId,bytes32 modelSha256,bytes32 inputDigest,bytes32 outputDigest,address worker)"
    );
    uint256 private constant BPS = 10_000;

    /// @notice The registry that holds worker stakes; this escrow must be its `escrow`.
    WorkerRegistry public immutable registry;
    /// @notice Share of the offender's current stake taken per slash, in basis points.
    uint16 public immutable slashBps;

    mapping(bytes32 jobId => Job) private _jobs;
    mapping(address payee => uint256 amount) private _credits;
    /// @notice EIP-712 digests of offending receipts already used as slashing evidence.
    mapping(bytes32 digest => bool) public evidenceUsed;

    /// @param registry_ The WorkerRegistry (whose deployer must then call `setEscrow(this)`).
    /// @param slashBps_ Basis points of stake slashed per proven conflict, 1..10000.
    constructor(WorkerRegistry registry_, uint16 slashBps_) EIP712("shardnet", "1") {
        if (address(registry_) == address(0)) revert ZeroAddress();
        if (slashBps_ == 0 || slashBps_ > BPS) revert InvalidSlashBps(slashBps_);
        registry = registry_;
        slashBps = slashBps_;
    }

    // ─────────────────────────────────────────────────────────────────────────
    // Job lifecycle
    // ─────────────────────────────────────────────────────────────────────────

    /// @notice Opens job `jobId`: msg.sender becomes its client and deposits msg.value.
    /// @param jobId Unique job id (chosen off chain, e.g. a hash); never reusable.
    /// @param coordinator The only address that may settle the job or slash with its receipts.
    /// @param deadline Unix time; settle at or before it, refund after it.
    /// @param priceCap Most that settlement may charge; must be <= msg.value. The rest of the
    ///        deposit always goes back to the client.
    function openJob(bytes32 jobId, address coordinator, uint64 deadline, uint256 priceCap) external payable {
        if (msg.value == 0) revert ZeroDeposit();
        if (priceCap > msg.value) revert PriceCapAboveDeposit(priceCap, msg.value);
        if (coordinator == address(0)) revert ZeroAddress();
        if (deadline <= block.timestamp) revert DeadlineNotInFuture(deadline, block.timestamp);
        if (_jobs[jobId].status != JobStatus.None) revert JobExists(jobId);

        _jobs[jobId] = Job({
            client: msg.sender,
            deadline: deadline,
            status: JobStatus.Open,
            coordinator: coordinator,
            deposit: SafeCast.toUint128(msg.value),
            // priceCap <= msg.value, which fits in 128 bits by the line above.
            // forge-lint: disable-next-line(unsafe-typecast)
            priceCap: uint128(priceCap)
        });
        emit JobOpened(jobId, msg.sender, coordinator, deadline, msg.value, priceCap);
    }

    /// @notice Settles job `jobId` once, in one transaction whatever its shard count:
    ///         credits each worker its amount, the coordinator its fee, and the client the
    ///         rest of the deposit. Only the job's coordinator, only while the job is open
    ///         and not after its deadline.
    /// @param workers Workers to pay; each must be staked in the registry now. A worker may
    ///        appear more than once (its amounts add up).
    /// @param amounts Wei per entry of `workers`.
    /// @param coordinatorFee Wei credited to the coordinator.
    /// @param resultsRoot Commitment to the job's results (e.g. a Merkle root of receipts),
    ///        recorded in the `JobSettled` event.
    function settle(
        bytes32 jobId,
        address[] calldata workers,
        uint256[] calldata amounts,
        uint256 coordinatorFee,
        bytes32 resultsRoot
    ) external {
        Job storage job = _jobs[jobId];
        JobStatus status = job.status;
        if (status == JobStatus.None) revert UnknownJob(jobId);
        if (msg.sender != job.coordinator) revert NotCoordinator(msg.sender);
        if (status != JobStatus.Open) revert JobNotOpen(jobId, status);
        uint64 deadline = job.deadline;
        if (block.timestamp > deadline) revert DeadlinePassed(deadline, block.timestamp);
        uint256 n = workers.length;
        if (n != amounts.length) revert LengthMismatch(n, amounts.length);

        uint256 total = coordinatorFee;
        for (uint256 i; i < n; ++i) {
            address w = workers[i];
            if (!registry.isStaked(w)) revert WorkerNotStaked(w);
            uint256 a = amounts[i];
            total += a;
            _credits[w] += a;
            emit WorkerPaid(jobId, w, a);
        }
        uint256 cap = job.priceCap;
        if (total > cap) revert OverPriceCap(total, cap);

        // unchecked: total <= priceCap <= deposit.
        uint256 clientRefund;
        unchecked {
            clientRefund = uint256(job.deposit) - total;
        }
        job.status = JobStatus.Settled;
        _credits[msg.sender] += coordinatorFee;
        _credits[job.client] += clientRefund;
        emit JobSettled(jobId, resultsRoot, total, coordinatorFee, clientRefund);
    }

    /// @notice Pays the whole deposit of an unsettled job back to its client, after the
    ///         deadline. Only the client may call it; the ether goes to msg.sender.
    function refund(bytes32 jobId) external nonReentrant {
        Job storage job = _jobs[jobId];
        JobStatus status = job.status;
        if (status == JobStatus.None) revert UnknownJob(jobId);
        if (msg.sender != job.client) revert NotClient(msg.sender);
        if (status != JobStatus.Open) revert JobNotOpen(jobId, status);
        uint64 deadline = job.deadline;
        if (block.timestamp <= deadline) revert DeadlineNotPassed(deadline, block.timestamp);

        uint256 amount = job.deposit;
        job.status = JobStatus.Refunded;
        emit JobRefunded(jobId, msg.sender, amount);
        _send(msg.sender, amount);
    }

    // ─────────────────────────────────────────────────────────────────────────
    // Pull payments
    // ─────────────────────────────────────────────────────────────────────────

    /// @notice Pays the caller all of its credits (worker pay, coordinator fees, client
    ///         change from settlements).
    function withdraw() external nonReentrant {
        uint256 amount = _credits[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        _credits[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    // ─────────────────────────────────────────────────────────────────────────
    // Slashing
    // ─────────────────────────────────────────────────────────────────────────

    /// @notice Slashes `offending.worker` by `slashBps` of its current stake, credited (in the
    ///         registry) to the job's client, using two conflicting signed receipts as evidence.
    /// @dev Trust model: the contract cannot run the model, so it cannot tell which output
    ///      is right. It checks that the evidence is a genuine conflict signed by both
    ///      workers: both signatures recover to their receipt's `worker`, both workers are
    ///      registered and differ, both receipts name the same job, model and input digest
    ///      and different output digests. Which side is wrong is the coordinator's referee
    ///      verdict, so only the job's coordinator may submit it. The shard ids may differ
    ///      (a spot re-execution is sent as an ordinary new shard). The slashed value goes
    ///      to the client, not the coordinator, so a coordinator does not profit from a
    ///      false verdict. Each offending receipt (by EIP-712 digest) is usable once. The job
    ///      may be in any state (open, settled or refunded): cheating is cheating.
    /// @param offending The receipt the referee found wrong.
    /// @param offendingSig 65-byte (r,s,v) signature by `offending.worker`.
    /// @param witness A conflicting receipt from another worker for the same input.
    /// @param witnessSig Signature by `witness.worker`.
    /// @return amount The wei actually slashed.
    function slash(
        Receipt calldata offending,
        bytes calldata offendingSig,
        Receipt calldata witness,
        bytes calldata witnessSig
    ) external returns (uint256 amount) {
        bytes32 jobId = offending.jobId;
        Job storage job = _jobs[jobId];
        if (job.status == JobStatus.None) revert UnknownJob(jobId);
        if (msg.sender != job.coordinator) revert NotCoordinator(msg.sender);
        if (
            witness.jobId != jobId || witness.modelSha256 != offending.modelSha256
                || witness.inputDigest != offending.inputDigest || witness.outputDigest == offending.outputDigest
        ) revert NotAConflict();
        address offender = offending.worker;
        if (witness.worker == offender) revert SameWorker(offender);

        bytes32 digest = receiptDigest(offending);
        if (evidenceUsed[digest]) revert EvidenceAlreadyUsed(digest);
        _checkSignature(digest, offendingSig, offender);
        _checkSignature(receiptDigest(witness), witnessSig, witness.worker);
        if (!registry.isRegistered(offender)) revert WorkerNotRegistered(offender);
        if (!registry.isRegistered(witness.worker)) revert WorkerNotRegistered(witness.worker);

        uint256 due = registry.stakeOf(offender) * slashBps / BPS;
        if (due == 0) revert NothingToSlash(offender);

        evidenceUsed[digest] = true;
        amount = registry.slash(offender, due, job.client);
        emit WorkerSlashed(jobId, offender, amount, digest);
    }

    // ─────────────────────────────────────────────────────────────────────────
    // Views
    // ─────────────────────────────────────────────────────────────────────────

    /// @notice EIP-712 digest of `r` under this escrow's domain: the exact hash a worker
    ///         signs (eth_account `encode_typed_data` + sign produces a signature over it).
    function receiptDigest(Receipt calldata r) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(RECEIPT_TYPEHASH, r.jobId, r.shardId, r.modelSha256, r.inputDigest, r.outputDigest, r.worker)
            )
        );
    }

    /// @notice The EIP-712 domain separator of this escrow.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @notice The record of job `jobId` (status None if it never existed).
    function getJob(bytes32 jobId) external view returns (Job memory) {
        return _jobs[jobId];
    }

    /// @notice Unwithdrawn credits of `payee` in this escrow.
    function creditOf(address payee) external view returns (uint256) {
        return _credits[payee];
    }

    // ─────────────────────────────────────────────────────────────────────────
    // Internal
    // ─────────────────────────────────────────────────────────────────────────

    function _checkSignature(bytes32 digest, bytes calldata sig, address signer) private pure {
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, sig);
        if (err != ECDSA.RecoverError.NoError || recovered != signer) revert InvalidSignature(signer);
    }

    function _send(address to, uint256 amount) private {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }
}
