// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {Rejecter} from "./utils/Test.sol";
import {WorkerRegistry} from "../src/WorkerRegistry.sol";

contract WorkerRegistryTest is Fixture {
    // ─────────────────────────────────────────────────────────────────────────
    // setEscrow
    // ─────────────────────────────────────────────────────────────────────────

    function test_SetEscrow_LocksOnce() public view {
        assertEq(registry.escrow(), address(escrow), "escrow");
        assertEq(registry.deployer(), deployer, "deployer");
        assertEq(registry.minStake(), MIN_STAKE, "minStake");
        assertEq(registry.unbondingPeriod(), UNBONDING, "unbondingPeriod");
    }

    function test_SetEscrow_EmitsEvent() public {
        vm.prank(deployer);
        WorkerRegistry r = new WorkerRegistry(MIN_STAKE, UNBONDING);
        vm.expectEmit(address(r));
        emit WorkerRegistry.EscrowSet(address(0xE5));
        vm.prank(deployer);
        r.setEscrow(address(0xE5));
    }

    function test_SetEscrow_RevertsTwice() public {
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.EscrowAlreadySet.selector, address(escrow)));
        vm.prank(deployer);
        registry.setEscrow(address(0xE5));
    }

    function test_SetEscrow_RevertsNotDeployer() public {
        vm.prank(deployer);
        WorkerRegistry r = new WorkerRegistry(MIN_STAKE, UNBONDING);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.NotDeployer.selector, stranger));
        vm.prank(stranger);
        r.setEscrow(address(0xE5));
    }

    function test_SetEscrow_RevertsZeroAddress() public {
        vm.prank(deployer);
        WorkerRegistry r = new WorkerRegistry(MIN_STAKE, UNBONDING);
        vm.expectRevert(WorkerRegistry.ZeroAddress.selector);
        vm.prank(deployer);
        r.setEscrow(address(0));
    }

    // ─────────────────────────────────────────────────────────────────────────
    // register / stake
    // ─────────────────────────────────────────────────────────────────────────

    function test_Register_BindsKeyAndStakes() public {
        vm.deal(alice, 5 ether);
        vm.expectEmit(address(registry));
        emit WorkerRegistry.WorkerRegistered(alice, _peerKey(alice), 2 ether);
        vm.prank(alice);
        registry.register{value: 2 ether}(_peerKey(alice));

        assertTrue(registry.isStaked(alice), "staked");
        assertTrue(registry.isRegistered(alice), "registered");
        assertEq(registry.peerKeyOf(alice), _peerKey(alice), "peerKey");
        assertEq(registry.workerOfPeerKey(_peerKey(alice)), alice, "owner of key");
        assertEq(registry.stakeOf(alice), 2 ether, "stake");
        WorkerRegistry.Worker memory w = registry.getWorker(alice);
        assertEq(w.stake, 2 ether, "record stake");
        assertEq(uint256(w.unbondingAt), 0, "record unbondingAt");
        assertTrue(w.registered, "record registered");
        assertEq(address(registry).balance, 2 ether, "balance");
    }

    function test_Register_RevertsZeroPeerKey() public {
        vm.deal(alice, 1 ether);
        vm.expectRevert(WorkerRegistry.ZeroPeerKey.selector);
        vm.prank(alice);
        registry.register{value: 1 ether}(bytes32(0));
    }

    function test_Register_RevertsTwice() public {
        _register(alice, 1 ether);
        vm.deal(alice, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.AlreadyRegistered.selector, alice));
        vm.prank(alice);
        registry.register{value: 1 ether}(keccak256("another key"));
    }

    function test_Register_RevertsPeerKeyTaken() public {
        _register(alice, 1 ether);
        vm.deal(bob, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.PeerKeyTaken.selector, _peerKey(alice), alice));
        vm.prank(bob);
        registry.register{value: 1 ether}(_peerKey(alice));
    }

    function test_Register_RevertsStakeTooLow() public {
        vm.deal(alice, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.StakeTooLow.selector, MIN_STAKE - 1, MIN_STAKE));
        vm.prank(alice);
        registry.register{value: MIN_STAKE - 1}(_peerKey(alice));
    }

    function test_Stake_AddsToStake() public {
        _register(alice, 1 ether);
        vm.deal(alice, 3 ether);
        vm.expectEmit(address(registry));
        emit WorkerRegistry.StakeAdded(alice, 3 ether, 4 ether);
        vm.prank(alice);
        registry.stake{value: 3 ether}();
        assertEq(registry.stakeOf(alice), 4 ether, "stake");
    }

    function test_Stake_RevertsNotRegistered() public {
        vm.deal(alice, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.NotRegistered.selector, alice));
        vm.prank(alice);
        registry.stake{value: 1 ether}();
    }

    function test_Stake_RevertsWhileUnbonding() public {
        _register(alice, 1 ether);
        vm.prank(alice);
        registry.beginUnbond();
        vm.deal(alice, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.AlreadyUnbonding.selector, alice));
        vm.prank(alice);
        registry.stake{value: 1 ether}();
    }

    function test_Stake_RevertsZeroAmount() public {
        _register(alice, 1 ether);
        vm.expectRevert(WorkerRegistry.ZeroAmount.selector);
        vm.prank(alice);
        registry.stake();
    }

    function testFuzz_Register_StakeThreshold(uint256 amount) public {
        amount = bound(amount, 0, 100 ether);
        vm.deal(alice, amount);
        if (amount < MIN_STAKE) {
            vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.StakeTooLow.selector, amount, MIN_STAKE));
        }
        vm.prank(alice);
        registry.register{value: amount}(_peerKey(alice));
        assertEq(registry.stakeOf(alice), amount >= MIN_STAKE ? amount : 0, "stake");
        assertEq(address(registry).balance, amount >= MIN_STAKE ? amount : 0, "balance");
    }

    // ─────────────────────────────────────────────────────────────────────────
    // unbonding
    // ─────────────────────────────────────────────────────────────────────────

    function test_BeginUnbond_StopsCountingAsStaked() public {
        _register(alice, 1 ether);
        vm.expectEmit(address(registry));
        emit WorkerRegistry.UnbondingStarted(alice, T0 + UNBONDING);
        vm.prank(alice);
        registry.beginUnbond();
        assertFalse(registry.isStaked(alice), "staked while unbonding");
        assertTrue(registry.isRegistered(alice), "still registered");
        assertEq(uint256(registry.getWorker(alice).unbondingAt), T0 + UNBONDING, "unbondingAt");
    }

    function test_BeginUnbond_RevertsNotRegistered() public {
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.NotRegistered.selector, alice));
        vm.prank(alice);
        registry.beginUnbond();
    }

    function test_BeginUnbond_RevertsTwice() public {
        _register(alice, 1 ether);
        vm.prank(alice);
        registry.beginUnbond();
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.AlreadyUnbonding.selector, alice));
        vm.prank(alice);
        registry.beginUnbond();
    }

    function test_WithdrawStake_PaysAfterPeriodAndFreesKey() public {
        _register(alice, 2 ether);
        vm.prank(alice);
        registry.beginUnbond();
        vm.warp(T0 + UNBONDING);
        uint256 before = alice.balance;
        vm.expectEmit(address(registry));
        emit WorkerRegistry.StakeWithdrawn(alice, _peerKey(alice), 2 ether);
        vm.prank(alice);
        registry.withdrawStake();
        assertEq(alice.balance - before, 2 ether, "paid");
        assertFalse(registry.isRegistered(alice), "record deleted");
        assertEq(registry.workerOfPeerKey(_peerKey(alice)), address(0), "key freed");
        assertEq(address(registry).balance, 0, "registry empty");
        // The same key can be bound again.
        _register(alice, 1 ether);
        assertTrue(registry.isStaked(alice), "re-registered");
    }

    function test_WithdrawStake_RevertsNotRegistered() public {
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.NotRegistered.selector, alice));
        vm.prank(alice);
        registry.withdrawStake();
    }

    function test_WithdrawStake_RevertsNotUnbonding() public {
        _register(alice, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.NotUnbonding.selector, alice));
        vm.prank(alice);
        registry.withdrawStake();
    }

    function test_WithdrawStake_RevertsBeforePeriodEnds() public {
        _register(alice, 1 ether);
        vm.prank(alice);
        registry.beginUnbond();
        vm.warp(T0 + UNBONDING - 1);
        vm.expectRevert(
            abi.encodeWithSelector(WorkerRegistry.UnbondingNotOver.selector, T0 + UNBONDING, T0 + UNBONDING - 1)
        );
        vm.prank(alice);
        registry.withdrawStake();
    }

    function test_WithdrawStake_RevertsTransferFailed() public {
        Rejecter r = new Rejecter();
        vm.deal(address(r), 1 ether);
        r.exec(address(registry), 1 ether, abi.encodeCall(WorkerRegistry.register, (keccak256("rejecter"))));
        r.exec(address(registry), 0, abi.encodeCall(WorkerRegistry.beginUnbond, ()));
        vm.warp(T0 + UNBONDING);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.TransferFailed.selector, address(r), 1 ether));
        r.exec(address(registry), 0, abi.encodeCall(WorkerRegistry.withdrawStake, ()));
    }

    // ─────────────────────────────────────────────────────────────────────────
    // slash (this test contract plays the escrow on a second registry)
    // ─────────────────────────────────────────────────────────────────────────

    function _registryWithSelfAsEscrow() internal returns (WorkerRegistry r) {
        r = new WorkerRegistry(MIN_STAKE, UNBONDING);
        r.setEscrow(address(this));
        vm.deal(alice, 4 ether);
        vm.prank(alice);
        r.register{value: 4 ether}(_peerKey(alice));
    }

    function test_Slash_CreditsBeneficiary() public {
        WorkerRegistry r = _registryWithSelfAsEscrow();
        vm.expectEmit(address(r));
        emit WorkerRegistry.Slashed(alice, 3 ether, client, 1 ether);
        uint256 slashed = r.slash(alice, 3 ether, client);
        assertEq(slashed, 3 ether, "slashed");
        assertEq(r.stakeOf(alice), 1 ether, "stake left");
        assertEq(r.creditOf(client), 3 ether, "credit");
        assertTrue(r.isStaked(alice), "still at minStake");

        uint256 before = client.balance;
        vm.expectEmit(address(r));
        emit WorkerRegistry.Withdrawn(client, 3 ether);
        vm.prank(client);
        r.withdraw();
        assertEq(client.balance - before, 3 ether, "withdrawn");
        assertEq(r.creditOf(client), 0, "credit cleared");
    }

    function test_Slash_CapsAtStake() public {
        WorkerRegistry r = _registryWithSelfAsEscrow();
        assertEq(r.slash(alice, 100 ether, client), 4 ether, "capped");
        assertEq(r.stakeOf(alice), 0, "stake gone");
        assertFalse(r.isStaked(alice), "not staked");
    }

    function test_Slash_WorksDuringUnbonding() public {
        WorkerRegistry r = _registryWithSelfAsEscrow();
        vm.prank(alice);
        r.beginUnbond();
        r.slash(alice, 1 ether, client);
        vm.warp(T0 + UNBONDING);
        uint256 before = alice.balance;
        vm.prank(alice);
        r.withdrawStake();
        assertEq(alice.balance - before, 3 ether, "only the rest is paid");
    }

    function test_Slash_BelowMinStakeUnstakesUntilTopUp() public {
        WorkerRegistry r = _registryWithSelfAsEscrow();
        r.slash(alice, 3.5 ether, client);
        assertFalse(r.isStaked(alice), "under-staked");
        vm.deal(alice, 1 ether);
        vm.prank(alice);
        r.stake{value: 1 ether}();
        assertTrue(r.isStaked(alice), "topped up");
    }

    function test_Slash_RevertsNotEscrow() public {
        _register(alice, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.NotEscrow.selector, stranger));
        vm.prank(stranger);
        registry.slash(alice, 1, stranger);
    }

    function test_Slash_RevertsBeforeEscrowSet() public {
        WorkerRegistry r = new WorkerRegistry(MIN_STAKE, UNBONDING);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.NotEscrow.selector, address(this)));
        r.slash(alice, 1, client);
    }

    function test_Slash_RevertsZeroBeneficiary() public {
        WorkerRegistry r = _registryWithSelfAsEscrow();
        vm.expectRevert(WorkerRegistry.ZeroAddress.selector);
        r.slash(alice, 1, address(0));
    }

    function test_Slash_RevertsNotRegistered() public {
        WorkerRegistry r = _registryWithSelfAsEscrow();
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.NotRegistered.selector, bob));
        r.slash(bob, 1, client);
    }

    function test_Slash_RevertsNothingToSlash() public {
        WorkerRegistry r = _registryWithSelfAsEscrow();
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.NothingToSlash.selector, alice));
        r.slash(alice, 0, client);
        r.slash(alice, 4 ether, client);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.NothingToSlash.selector, alice));
        r.slash(alice, 1, client);
    }

    function testFuzz_Slash_NeverMoreThanStake(uint256 stakeAmt, uint256 amount) public {
        stakeAmt = bound(stakeAmt, MIN_STAKE, 1_000 ether);
        amount = bound(amount, 1, type(uint256).max);
        WorkerRegistry r = new WorkerRegistry(MIN_STAKE, UNBONDING);
        r.setEscrow(address(this));
        vm.deal(alice, stakeAmt);
        vm.prank(alice);
        r.register{value: stakeAmt}(_peerKey(alice));

        uint256 slashed = r.slash(alice, amount, client);
        assertEq(slashed, amount < stakeAmt ? amount : stakeAmt, "slashed");
        assertEq(r.stakeOf(alice) + r.creditOf(client), stakeAmt, "value conserved");
        assertEq(address(r).balance, stakeAmt, "balance unchanged");
    }

    // ─────────────────────────────────────────────────────────────────────────
    // withdraw
    // ─────────────────────────────────────────────────────────────────────────

    function test_Withdraw_RevertsNothingToWithdraw() public {
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.NothingToWithdraw.selector, client));
        vm.prank(client);
        registry.withdraw();
    }

    function test_Withdraw_RevertsTwice() public {
        WorkerRegistry r = _registryWithSelfAsEscrow();
        r.slash(alice, 1 ether, client);
        vm.prank(client);
        r.withdraw();
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.NothingToWithdraw.selector, client));
        vm.prank(client);
        r.withdraw();
    }

    function test_Withdraw_RevertsTransferFailed() public {
        WorkerRegistry r = _registryWithSelfAsEscrow();
        Rejecter rej = new Rejecter();
        r.slash(alice, 1 ether, address(rej));
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.TransferFailed.selector, address(rej), 1 ether));
        rej.exec(address(r), 0, abi.encodeCall(WorkerRegistry.withdraw, ()));
    }
}
