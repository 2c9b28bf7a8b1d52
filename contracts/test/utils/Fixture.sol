// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "./Test.sol";
import {WorkerRegistry} from "../../src/WorkerRegistry.sol";
import {JobEscrow} from "../../src/JobEscrow.sol";

/// @notice Deployed registry + escrow, funded actors, and helpers shared by the test suites.
abstract contract Fixture is Test {
    uint256 internal constant MIN_STAKE = 1 ether;
    uint64 internal constant UNBONDING = 7 days;
    uint16 internal constant SLASH_BPS = 5_000;
    uint64 internal constant T0 = 1_000_000;

    WorkerRegistry internal registry;
    JobEscrow internal escrow;

    address internal deployer = address(0xD3);
    address internal client = address(0xC1);
    address internal coordinator = address(0xC0);
    address internal stranger = address(0x5);

    // Workers are keyed so their receipts can be signed with vm.sign.
    uint256 internal constant PK_ALICE = 0xA11CE;
    uint256 internal constant PK_BOB = 0xB0B;
    uint256 internal constant PK_CAROL = 0xCA201;
    address internal alice;
    address internal bob;
    address internal carol;

    bytes32 internal constant JOB = keccak256("job-1");
    bytes32 internal constant MODEL = keccak256("model.onnx");
    bytes32 internal constant INPUT = keccak256("rows 0..63");

    function setUp() public virtual {
        vm.warp(T0);
        vm.startPrank(deployer);
        registry = new WorkerRegistry(MIN_STAKE, UNBONDING);
        escrow = new JobEscrow(registry, SLASH_BPS);
        registry.setEscrow(address(escrow));
        vm.stopPrank();

        alice = vm.addr(PK_ALICE);
        bob = vm.addr(PK_BOB);
        carol = vm.addr(PK_CAROL);
        vm.label(alice, "alice");
        vm.label(bob, "bob");
        vm.label(carol, "carol");
        vm.label(client, "client");
        vm.label(coordinator, "coordinator");
        vm.deal(client, 1_000 ether);
        vm.deal(stranger, 1_000 ether);
    }

    // ─────────────────────────────────────────────────────────────────────────
    // Helpers
    // ─────────────────────────────────────────────────────────────────────────

    function _peerKey(address worker) internal pure returns (bytes32) {
        return keccak256(abi.encode("ed25519", worker));
    }

    function _register(address worker, uint256 amount) internal {
        vm.deal(worker, worker.balance + amount);
        vm.prank(worker);
        registry.register{value: amount}(_peerKey(worker));
    }

    function _open(bytes32 jobId, uint256 deposit, uint256 priceCap) internal {
        vm.prank(client);
        escrow.openJob{value: deposit}(jobId, coordinator, T0 + 1 hours, priceCap);
    }

    function _receipt(address worker, bytes32 output) internal pure returns (JobEscrow.Receipt memory r) {
        r = JobEscrow.Receipt({
            jobId: JOB, shardId: 3, modelSha256: MODEL, inputDigest: INPUT, outputDigest: output, worker: worker
        });
    }

    function _signReceipt(uint256 pk, JobEscrow.Receipt memory r) internal view returns (bytes memory) {
        return _sig(pk, escrow.receiptDigest(r));
    }

    function _one(address a) internal pure returns (address[] memory xs) {
        xs = new address[](1);
        xs[0] = a;
    }

    function _oneAmt(uint256 a) internal pure returns (uint256[] memory xs) {
        xs = new uint256[](1);
        xs[0] = a;
    }
}
