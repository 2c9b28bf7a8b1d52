// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {Rejecter} from "./utils/Test.sol";
import {WorkerRegistry} from "../src/WorkerRegistry.sol";
import {JobEscrow} from "../src/JobEscrow.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/// @notice Re-enters `withdraw` from its receive hook.
contract ReentrantPayee {
    JobEscrow internal immutable escrow;

    constructor(JobEscrow e) {
        escrow = e;
    }

    function pull() external {
        escrow.withdraw();
    }

    receive() external payable {
        escrow.withdraw();
    }
}

contract JobEscrowTest is Fixture {
    uint64 internal constant DEADLINE = T0 + 1 hours;

    function setUp() public override {
        super.setUp();
        _register(alice, 2 ether);
        _register(bob, 2 ether);
        _register(carol, 2 ether);
    }

    function _settleOne(bytes32 jobId, address worker, uint256 amount, uint256 fee) internal {
        vm.prank(coordinator);
        escrow.settle(jobId, _one(worker), _oneAmt(amount), fee, keccak256("root"));
    }

    // ─────────────────────────────────────────────────────────────────────────
    // constructor
    // ─────────────────────────────────────────────────────────────────────────

    function test_Constructor_SetsParameters() public view {
        assertEq(address(escrow.registry()), address(registry), "registry");
        assertEq(uint256(escrow.slashBps()), SLASH_BPS, "slashBps");
    }

    function test_Constructor_RevertsZeroRegistry() public {
        vm.expectRevert(JobEscrow.ZeroAddress.selector);
        new JobEscrow(WorkerRegistry(address(0)), SLASH_BPS);
    }

    function test_Constructor_RevertsZeroSlashBps() public {
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.InvalidSlashBps.selector, 0));
        new JobEscrow(registry, 0);
    }

    function test_Constructor_RevertsSlashBpsAbove100Percent() public {
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.InvalidSlashBps.selector, 10_001));
        new JobEscrow(registry, 10_001);
    }

    // ─────────────────────────────────────────────────────────────────────────
    // openJob
    // ─────────────────────────────────────────────────────────────────────────

    function test_OpenJob_StoresJob() public {
        vm.expectEmit(address(escrow));
        emit JobEscrow.JobOpened(JOB, client, coordinator, DEADLINE, 3 ether, 2 ether);
        _open(JOB, 3 ether, 2 ether);

        JobEscrow.Job memory j = escrow.getJob(JOB);
        assertEq(j.client, client, "client");
        assertEq(j.coordinator, coordinator, "coordinator");
        assertEq(uint256(j.deadline), DEADLINE, "deadline");
        assertEq(uint256(j.status), uint256(JobEscrow.JobStatus.Open), "status");
        assertEq(uint256(j.deposit), 3 ether, "deposit");
        assertEq(uint256(j.priceCap), 2 ether, "priceCap");
        assertEq(address(escrow).balance, 3 ether, "balance");
    }

    function test_OpenJob_RevertsZeroDeposit() public {
        vm.expectRevert(JobEscrow.ZeroDeposit.selector);
        vm.prank(client);
        escrow.openJob(JOB, coordinator, DEADLINE, 0);
    }

    function test_OpenJob_RevertsPriceCapAboveDeposit() public {
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.PriceCapAboveDeposit.selector, 2 ether, 1 ether));
        vm.prank(client);
        escrow.openJob{value: 1 ether}(JOB, coordinator, DEADLINE, 2 ether);
    }

    function test_OpenJob_RevertsZeroCoordinator() public {
        vm.expectRevert(JobEscrow.ZeroAddress.selector);
        vm.prank(client);
        escrow.openJob{value: 1 ether}(JOB, address(0), DEADLINE, 1 ether);
    }

    function test_OpenJob_RevertsDeadlineNotInFuture() public {
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.DeadlineNotInFuture.selector, T0, T0));
        vm.prank(client);
        escrow.openJob{value: 1 ether}(JOB, coordinator, T0, 1 ether);
    }

    function test_OpenJob_RevertsJobExists() public {
        _open(JOB, 1 ether, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.JobExists.selector, JOB));
        vm.prank(stranger);
        escrow.openJob{value: 1 ether}(JOB, coordinator, DEADLINE, 1 ether);
    }

    function test_OpenJob_RevertsJobIdReuseAfterRefund() public {
        _open(JOB, 1 ether, 1 ether);
        vm.warp(DEADLINE + 1);
        vm.prank(client);
        escrow.refund(JOB);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.JobExists.selector, JOB));
        vm.prank(client);
        escrow.openJob{value: 1 ether}(JOB, coordinator, DEADLINE + 2 hours, 1 ether);
    }

    function test_OpenJob_RevertsDepositOver128Bits() public {
        uint256 huge = uint256(type(uint128).max) + 1;
        vm.deal(client, huge);
        vm.expectRevert(abi.encodeWithSelector(SafeCast.SafeCastOverflowedUintDowncast.selector, 128, huge));
        vm.prank(client);
        escrow.openJob{value: huge}(JOB, coordinator, DEADLINE, 1);
    }

    // ─────────────────────────────────────────────────────────────────────────
    // settle
    // ─────────────────────────────────────────────────────────────────────────

    function test_Settle_CreditsEveryone() public {
        _open(JOB, 10 ether, 8 ether);
        address[] memory ws = new address[](3);
        ws[0] = alice;
        ws[1] = bob;
        ws[2] = alice; // repeated worker: amounts add up
        uint256[] memory amts = new uint256[](3);
        amts[0] = 1 ether;
        amts[1] = 2 ether;
        amts[2] = 3 ether;

        vm.expectEmit(address(escrow));
        emit JobEscrow.WorkerPaid(JOB, alice, 1 ether);
        vm.expectEmit(address(escrow));
        emit JobEscrow.WorkerPaid(JOB, bob, 2 ether);
        vm.expectEmit(address(escrow));
        emit JobEscrow.WorkerPaid(JOB, alice, 3 ether);
        vm.expectEmit(address(escrow));
        emit JobEscrow.JobSettled(JOB, keccak256("root"), 6.5 ether, 0.5 ether, 3.5 ether);
        vm.prank(coordinator);
        escrow.settle(JOB, ws, amts, 0.5 ether, keccak256("root"));

        assertEq(escrow.creditOf(alice), 4 ether, "alice");
        assertEq(escrow.creditOf(bob), 2 ether, "bob");
        assertEq(escrow.creditOf(coordinator), 0.5 ether, "coordinator");
        assertEq(escrow.creditOf(client), 3.5 ether, "client change");
        assertEq(uint256(escrow.getJob(JOB).status), uint256(JobEscrow.JobStatus.Settled), "status");
        assertEq(address(escrow).balance, 10 ether, "nothing left the escrow yet");
    }

    function test_Settle_AtDeadline() public {
        _open(JOB, 1 ether, 1 ether);
        vm.warp(DEADLINE);
        _settleOne(JOB, alice, 1 ether, 0);
        assertEq(escrow.creditOf(alice), 1 ether, "paid at the deadline");
    }

    function test_Settle_NoWorkersOnlyFee() public {
        _open(JOB, 1 ether, 1 ether);
        vm.prank(coordinator);
        escrow.settle(JOB, new address[](0), new uint256[](0), 0.1 ether, bytes32(0));
        assertEq(escrow.creditOf(coordinator), 0.1 ether, "fee");
        assertEq(escrow.creditOf(client), 0.9 ether, "change");
    }

    function test_Settle_RevertsTwice() public {
        _open(JOB, 1 ether, 1 ether);
        _settleOne(JOB, alice, 0.5 ether, 0);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.JobNotOpen.selector, JOB, JobEscrow.JobStatus.Settled));
        _settleOne(JOB, alice, 0.5 ether, 0);
    }

    function test_Settle_RevertsAfterRefund() public {
        _open(JOB, 1 ether, 1 ether);
        vm.warp(DEADLINE + 1);
        vm.prank(client);
        escrow.refund(JOB);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.JobNotOpen.selector, JOB, JobEscrow.JobStatus.Refunded));
        _settleOne(JOB, alice, 0.5 ether, 0);
    }

    function test_Settle_RevertsUnknownJob() public {
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.UnknownJob.selector, JOB));
        _settleOne(JOB, alice, 0.5 ether, 0);
    }

    function test_Settle_RevertsNotCoordinator() public {
        _open(JOB, 1 ether, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.NotCoordinator.selector, client));
        vm.prank(client);
        escrow.settle(JOB, _one(alice), _oneAmt(1), 0, bytes32(0));
    }

    function test_Settle_RevertsAfterDeadline() public {
        _open(JOB, 1 ether, 1 ether);
        vm.warp(DEADLINE + 1);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.DeadlinePassed.selector, DEADLINE, DEADLINE + 1));
        _settleOne(JOB, alice, 0.5 ether, 0);
    }

    function test_Settle_RevertsLengthMismatch() public {
        _open(JOB, 1 ether, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LengthMismatch.selector, 1, 2));
        vm.prank(coordinator);
        escrow.settle(JOB, _one(alice), new uint256[](2), 0, bytes32(0));
    }

    function test_Settle_RevertsWorkerNotRegistered() public {
        _open(JOB, 1 ether, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.WorkerNotStaked.selector, stranger));
        _settleOne(JOB, stranger, 0.5 ether, 0);
    }

    function test_Settle_RevertsWorkerUnbonding() public {
        _open(JOB, 1 ether, 1 ether);
        vm.prank(bob);
        registry.beginUnbond();
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.WorkerNotStaked.selector, bob));
        _settleOne(JOB, bob, 0.5 ether, 0);
    }

    function test_Settle_RevertsOverPriceCap() public {
        _open(JOB, 2 ether, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.OverPriceCap.selector, 1 ether + 1, 1 ether));
        _settleOne(JOB, alice, 1 ether, 1);
    }

    function test_Settle_RevertsOnSumOverflow() public {
        _open(JOB, 1 ether, 1 ether);
        address[] memory ws = new address[](2);
        ws[0] = alice;
        ws[1] = bob;
        uint256[] memory amts = new uint256[](2);
        amts[0] = type(uint256).max;
        amts[1] = 1;
        vm.expectRevert(); // arithmetic panic 0x11
        vm.prank(coordinator);
        escrow.settle(JOB, ws, amts, 0, bytes32(0));
    }

    function testFuzz_Settle_Amounts(uint256 deposit, uint256 cap, uint256 a0, uint256 a1, uint256 a2, uint256 fee)
        public
    {
        deposit = bound(deposit, 1, 500 ether);
        cap = bound(cap, 0, deposit);
        a0 = bound(a0, 0, cap);
        a1 = bound(a1, 0, cap - a0);
        a2 = bound(a2, 0, cap - a0 - a1);
        fee = bound(fee, 0, cap - a0 - a1 - a2);
        _open(JOB, deposit, cap);

        address[] memory ws = new address[](3);
        (ws[0], ws[1], ws[2]) = (alice, bob, carol);
        uint256[] memory amts = new uint256[](3);
        (amts[0], amts[1], amts[2]) = (a0, a1, a2);
        vm.prank(coordinator);
        escrow.settle(JOB, ws, amts, fee, bytes32(0));

        assertEq(escrow.creditOf(alice), a0, "alice");
        assertEq(escrow.creditOf(bob), a1, "bob");
        assertEq(escrow.creditOf(carol), a2, "carol");
        assertEq(escrow.creditOf(coordinator), fee, "fee");
        assertEq(escrow.creditOf(client), deposit - a0 - a1 - a2 - fee, "change");
        uint256 owed = escrow.creditOf(alice) + escrow.creditOf(bob) + escrow.creditOf(carol)
            + escrow.creditOf(coordinator) + escrow.creditOf(client);
        assertEq(owed, deposit, "value conserved");
        assertEq(address(escrow).balance, deposit, "balance");
    }

    function testFuzz_Settle_RevertsOverCap(uint256 cap, uint256 amount, uint256 fee) public {
        cap = bound(cap, 0, 100 ether);
        amount = bound(amount, 0, 200 ether);
        fee = bound(fee, 0, 200 ether);
        vm.assume(amount + fee > cap);
        _open(JOB, 100 ether, cap);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.OverPriceCap.selector, amount + fee, cap));
        _settleOne(JOB, alice, amount, fee);
    }

    // ─────────────────────────────────────────────────────────────────────────
    // refund
    // ─────────────────────────────────────────────────────────────────────────

    function test_Refund_PaysWholeDepositAfterDeadline() public {
        _open(JOB, 3 ether, 1 ether);
        vm.warp(DEADLINE + 1);
        uint256 before = client.balance;
        vm.expectEmit(address(escrow));
        emit JobEscrow.JobRefunded(JOB, client, 3 ether);
        vm.prank(client);
        escrow.refund(JOB);
        assertEq(client.balance - before, 3 ether, "refunded");
        assertEq(address(escrow).balance, 0, "escrow empty");
        assertEq(uint256(escrow.getJob(JOB).status), uint256(JobEscrow.JobStatus.Refunded), "status");
    }

    function test_Refund_RevertsTwice() public {
        _open(JOB, 1 ether, 1 ether);
        vm.warp(DEADLINE + 1);
        vm.prank(client);
        escrow.refund(JOB);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.JobNotOpen.selector, JOB, JobEscrow.JobStatus.Refunded));
        vm.prank(client);
        escrow.refund(JOB);
    }

    function test_Refund_RevertsAfterSettle() public {
        _open(JOB, 1 ether, 1 ether);
        _settleOne(JOB, alice, 1 ether, 0);
        vm.warp(DEADLINE + 1);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.JobNotOpen.selector, JOB, JobEscrow.JobStatus.Settled));
        vm.prank(client);
        escrow.refund(JOB);
    }

    function test_Refund_RevertsUnknownJob() public {
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.UnknownJob.selector, JOB));
        vm.prank(client);
        escrow.refund(JOB);
    }

    function test_Refund_RevertsNotClient() public {
        _open(JOB, 1 ether, 1 ether);
        vm.warp(DEADLINE + 1);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.NotClient.selector, coordinator));
        vm.prank(coordinator);
        escrow.refund(JOB);
    }

    function test_Refund_RevertsAtDeadline() public {
        _open(JOB, 1 ether, 1 ether);
        vm.warp(DEADLINE);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.DeadlineNotPassed.selector, DEADLINE, DEADLINE));
        vm.prank(client);
        escrow.refund(JOB);
    }

    function test_Refund_RevertsTransferFailed() public {
        Rejecter r = new Rejecter();
        vm.deal(address(r), 1 ether);
        r.exec(address(escrow), 1 ether, abi.encodeCall(JobEscrow.openJob, (JOB, coordinator, DEADLINE, 1 ether)));
        vm.warp(DEADLINE + 1);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.TransferFailed.selector, address(r), 1 ether));
        r.exec(address(escrow), 0, abi.encodeCall(JobEscrow.refund, (JOB)));
    }

    // ─────────────────────────────────────────────────────────────────────────
    // withdraw
    // ─────────────────────────────────────────────────────────────────────────

    function test_Withdraw_PaysCredits() public {
        _open(JOB, 2 ether, 2 ether);
        _settleOne(JOB, alice, 1.5 ether, 0.25 ether);
        uint256 before = alice.balance;
        vm.expectEmit(address(escrow));
        emit JobEscrow.Withdrawn(alice, 1.5 ether);
        vm.prank(alice);
        escrow.withdraw();
        assertEq(alice.balance - before, 1.5 ether, "alice paid");
        vm.prank(coordinator);
        escrow.withdraw();
        vm.prank(client);
        escrow.withdraw();
        assertEq(coordinator.balance, 0.25 ether, "coordinator paid");
        assertEq(address(escrow).balance, 0, "escrow empty");
    }

    function test_Withdraw_RevertsNothingToWithdraw() public {
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.NothingToWithdraw.selector, alice));
        vm.prank(alice);
        escrow.withdraw();
    }

    function test_Withdraw_RevertsTwice() public {
        _open(JOB, 1 ether, 1 ether);
        _settleOne(JOB, alice, 1 ether, 0);
        vm.prank(alice);
        escrow.withdraw();
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.NothingToWithdraw.selector, alice));
        vm.prank(alice);
        escrow.withdraw();
    }

    function test_Withdraw_RevertsTransferFailed() public {
        Rejecter r = new Rejecter();
        vm.prank(client);
        escrow.openJob{value: 1 ether}(JOB, address(r), DEADLINE, 1 ether);
        r.exec(
            address(escrow),
            0,
            abi.encodeCall(JobEscrow.settle, (JOB, new address[](0), new uint256[](0), 0.5 ether, bytes32(0)))
        );
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.TransferFailed.selector, address(r), 0.5 ether));
        r.exec(address(escrow), 0, abi.encodeCall(JobEscrow.withdraw, ()));
    }

    function test_Withdraw_RevertsOnReentry() public {
        ReentrantPayee p = new ReentrantPayee(escrow);
        vm.prank(client);
        escrow.openJob{value: 1 ether}(JOB, address(p), DEADLINE, 1 ether);
        vm.prank(address(p));
        escrow.settle(JOB, new address[](0), new uint256[](0), 0.5 ether, bytes32(0));
        // The nested withdraw reverts (reentrancy guard), so the payee's receive fails.
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.TransferFailed.selector, address(p), 0.5 ether));
        p.pull();
        assertEq(escrow.creditOf(address(p)), 0.5 ether, "credit kept");
    }
}
