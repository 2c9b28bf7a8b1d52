// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "../utils/Test.sol";
import {WorkerRegistry} from "../../src/WorkerRegistry.sol";
import {JobEscrow} from "../../src/JobEscrow.sol";

/// @notice Drives both contracts through valid-looking sequences: register, stake, unbond,
///         withdraw stake, open, settle, refund, slash, withdraw credits, time passing.
///         Actions that would be invalid return early so most calls do something.
contract Handler is Test {
    uint256 internal constant MIN_STAKE = 1 ether;
    bytes32 internal constant MODEL = keccak256("model.onnx");
    bytes32 internal constant INPUT = keccak256("rows");

    WorkerRegistry public immutable registry;
    JobEscrow public immutable escrow;

    uint256[] internal workerKeys;
    address[] public workers;
    address[] public clients;
    address[] public coordinators;
    address[] public everyone;

    bytes32[] public jobIds;
    uint256 public ghostOpenDeposits;
    uint256 public ghostSlashes;
    uint256 internal nonce;

    constructor(WorkerRegistry r, JobEscrow e) {
        registry = r;
        escrow = e;
        for (uint256 i; i < 4; ++i) {
            uint256 pk = 0xB000 + i;
            workerKeys.push(pk);
            workers.push(vm.addr(pk));
            everyone.push(vm.addr(pk));
        }
        for (uint256 i; i < 3; ++i) {
            clients.push(vm.addr(0xC100 + i));
            everyone.push(vm.addr(0xC100 + i));
        }
        for (uint256 i; i < 2; ++i) {
            coordinators.push(vm.addr(0xC000 + i));
            everyone.push(vm.addr(0xC000 + i));
        }
    }

    function everyoneCount() external view returns (uint256) {
        return everyone.length;
    }

    function workerCount() external view returns (uint256) {
        return workers.length;
    }

    function jobCount() external view returns (uint256) {
        return jobIds.length;
    }

    // ─────────────────────────────────────────────────────────────────────────
    // Registry actions
    // ─────────────────────────────────────────────────────────────────────────

    function register(uint256 who, uint256 amount) external {
        address w = workers[who % workers.length];
        if (registry.isRegistered(w)) return;
        amount = bound(amount, MIN_STAKE, 10 ether);
        vm.deal(w, w.balance + amount);
        vm.prank(w);
        registry.register{value: amount}(keccak256(abi.encode(w)));
    }

    function addStake(uint256 who, uint256 amount) external {
        address w = workers[who % workers.length];
        if (!registry.isRegistered(w) || registry.getWorker(w).unbondingAt != 0) return;
        amount = bound(amount, 1, 5 ether);
        vm.deal(w, w.balance + amount);
        vm.prank(w);
        registry.stake{value: amount}();
    }

    function beginUnbond(uint256 who) external {
        address w = workers[who % workers.length];
        if (!registry.isRegistered(w) || registry.getWorker(w).unbondingAt != 0) return;
        vm.prank(w);
        registry.beginUnbond();
    }

    function withdrawStake(uint256 who) external {
        address w = workers[who % workers.length];
        WorkerRegistry.Worker memory rec = registry.getWorker(w);
        if (!rec.registered || rec.unbondingAt == 0 || block.timestamp < rec.unbondingAt) return;
        vm.prank(w);
        registry.withdrawStake();
    }

    function withdrawRegistryCredit(uint256 who) external {
        address a = everyone[who % everyone.length];
        if (registry.creditOf(a) == 0) return;
        vm.prank(a);
        registry.withdraw();
    }

    // ─────────────────────────────────────────────────────────────────────────
    // Escrow actions
    // ─────────────────────────────────────────────────────────────────────────

    function openJob(uint256 who, uint256 coord, uint256 deposit, uint256 cap, uint256 duration) external {
        address c = clients[who % clients.length];
        deposit = bound(deposit, 1, 20 ether);
        cap = bound(cap, 0, deposit);
        duration = bound(duration, 1, 3 days);
        bytes32 jobId = keccak256(abi.encode("job", nonce++));
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 deadline = uint64(block.timestamp + duration); // timestamps stay far below 2^64
        vm.deal(c, c.balance + deposit);
        vm.prank(c);
        escrow.openJob{value: deposit}(jobId, coordinators[coord % coordinators.length], deadline, cap);
        jobIds.push(jobId);
        ghostOpenDeposits += deposit;
    }

    function settle(uint256 jobSeed, uint256 amountSeed, uint256 fee) external {
        if (jobIds.length == 0) return;
        bytes32 jobId = jobIds[jobSeed % jobIds.length];
        JobEscrow.Job memory j = escrow.getJob(jobId);
        if (j.status != JobEscrow.JobStatus.Open || block.timestamp > j.deadline) return;

        uint256 n;
        for (uint256 i; i < workers.length; ++i) {
            if (registry.isStaked(workers[i])) ++n;
        }
        address[] memory ws = new address[](n);
        uint256[] memory amts = new uint256[](n);
        uint256 left = j.priceCap;
        uint256 k;
        for (uint256 i; i < workers.length; ++i) {
            if (!registry.isStaked(workers[i])) continue;
            ws[k] = workers[i];
            amts[k] = bound(uint256(keccak256(abi.encode(amountSeed, i))), 0, left);
            left -= amts[k];
            ++k;
        }
        fee = bound(fee, 0, left);
        vm.prank(j.coordinator);
        escrow.settle(jobId, ws, amts, fee, keccak256(abi.encode(jobId)));
        ghostOpenDeposits -= j.deposit;
    }

    function refund(uint256 jobSeed) external {
        if (jobIds.length == 0) return;
        bytes32 jobId = jobIds[jobSeed % jobIds.length];
        JobEscrow.Job memory j = escrow.getJob(jobId);
        if (j.status != JobEscrow.JobStatus.Open) return;
        if (block.timestamp <= j.deadline) vm.warp(uint256(j.deadline) + 1);
        vm.prank(j.client);
        escrow.refund(jobId);
        ghostOpenDeposits -= j.deposit;
    }

    function withdrawEscrowCredit(uint256 who) external {
        address a = everyone[who % everyone.length];
        if (escrow.creditOf(a) == 0) return;
        vm.prank(a);
        escrow.withdraw();
    }

    function slash(uint256 jobSeed, uint256 offenderSeed, uint256 witnessSeed, uint64 shardId) external {
        if (jobIds.length == 0) return;
        bytes32 jobId = jobIds[jobSeed % jobIds.length];
        uint256 oi = offenderSeed % workers.length;
        uint256 wi = witnessSeed % workers.length;
        if (oi == wi) wi = (wi + 1) % workers.length;
        address off = workers[oi];
        address wit = workers[wi];
        if (!registry.isRegistered(off) || !registry.isRegistered(wit)) return;
        if (registry.stakeOf(off) * escrow.slashBps() / 10_000 == 0) return;

        JobEscrow.Receipt memory ro = JobEscrow.Receipt(jobId, shardId, MODEL, INPUT, keccak256("bad"), off);
        JobEscrow.Receipt memory rw = JobEscrow.Receipt(jobId, shardId / 2, MODEL, INPUT, keccak256("good"), wit);
        if (escrow.evidenceUsed(escrow.receiptDigest(ro))) return;
        bytes memory so = _sig(workerKeys[oi], escrow.receiptDigest(ro));
        bytes memory sw = _sig(workerKeys[wi], escrow.receiptDigest(rw));
        vm.prank(escrow.getJob(jobId).coordinator);
        escrow.slash(ro, so, rw, sw);
        ++ghostSlashes;
    }

    function warp(uint256 secs) external {
        vm.warp(block.timestamp + bound(secs, 1, 2 days));
    }
}

contract InvariantsTest is Test {
    WorkerRegistry internal registry;
    JobEscrow internal escrow;
    Handler internal handler;

    function setUp() public {
        vm.warp(1_000_000);
        registry = new WorkerRegistry(1 ether, 1 days);
        escrow = new JobEscrow(registry, 5_000);
        registry.setEscrow(address(escrow));
        handler = new Handler(registry, escrow);
    }

    /// @dev forge reads this to restrict invariant fuzzing to the handler.
    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    /// Escrow balance == open deposits + unwithdrawn credits.
    function invariant_EscrowBalanceEqualsOwed() public view {
        uint256 open;
        for (uint256 i; i < handler.jobCount(); ++i) {
            JobEscrow.Job memory j = escrow.getJob(handler.jobIds(i));
            if (j.status == JobEscrow.JobStatus.Open) open += j.deposit;
        }
        assertEq(open, handler.ghostOpenDeposits(), "open deposits vs ghost");
        uint256 credits;
        for (uint256 i; i < handler.everyoneCount(); ++i) {
            credits += escrow.creditOf(handler.everyone(i));
        }
        assertEq(address(escrow).balance, open + credits, "escrow balance");
    }

    /// Registry balance == stakes + unwithdrawn credits.
    function invariant_RegistryBalanceEqualsOwed() public view {
        uint256 owed;
        for (uint256 i; i < handler.workerCount(); ++i) {
            owed += registry.stakeOf(handler.workers(i));
        }
        for (uint256 i; i < handler.everyoneCount(); ++i) {
            owed += registry.creditOf(handler.everyone(i));
        }
        assertEq(address(registry).balance, owed, "registry balance");
    }

    /// A worker counted as staked always has at least minStake and is not unbonding.
    function invariant_StakedMeansBonded() public view {
        for (uint256 i; i < handler.workerCount(); ++i) {
            address w = handler.workers(i);
            if (registry.isStaked(w)) {
                WorkerRegistry.Worker memory rec = registry.getWorker(w);
                assertTrue(rec.stake >= 1 ether && rec.unbondingAt == 0, "staked invariant");
            }
        }
    }
}
