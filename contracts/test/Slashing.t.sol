// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {WorkerRegistry} from "../src/WorkerRegistry.sol";
import {JobEscrow} from "../src/JobEscrow.sol";

contract SlashingTest is Fixture {
    bytes32 internal constant GOOD = keccak256("good output");
    bytes32 internal constant BAD = keccak256("bad output");

    JobEscrow.Receipt internal offending;
    JobEscrow.Receipt internal witness;
    bytes internal offendingSig;
    bytes internal witnessSig;

    function setUp() public override {
        super.setUp();
        _register(alice, 4 ether); // the cheater
        _register(bob, 2 ether); // the honest re-executor
        _open(JOB, 1 ether, 1 ether);
        offending = _receipt(alice, BAD);
        witness = _receipt(bob, GOOD);
        witness.shardId = 99; // a spot re-execution travels as its own shard
        offendingSig = _signReceipt(PK_ALICE, offending);
        witnessSig = _signReceipt(PK_BOB, witness);
    }

    function _slash() internal returns (uint256) {
        vm.prank(coordinator);
        return escrow.slash(offending, offendingSig, witness, witnessSig);
    }

    function _resignAndExpect(bytes memory err) internal {
        offendingSig = _signReceipt(PK_ALICE, offending);
        witnessSig = _signReceipt(PK_BOB, witness);
        vm.expectRevert(err);
        _slash();
    }

    // ─────────────────────────────────────────────────────────────────────────
    // EIP-712 digest, cross-checked with eth_account
    // ─────────────────────────────────────────────────────────────────────────

    /// Reference values from Python eth_account 0.14 `encode_typed_data` + `Account.sign_message`
    /// with key 0x11..11, domain {shardnet, 1, chainId 31337, verifyingContract 0x…CaFE} and
    /// Receipt{jobId: keccak("job-1"), shardId: 7, modelSha256: keccak("model"),
    /// inputDigest: keccak("input"), outputDigest: keccak("output"), worker: that key's address}.
    function test_ReceiptDigest_MatchesEthAccount() public {
        assertEq(
            escrow.RECEIPT_TYPEHASH(), 0xecc8ae1662c9df35742b2558c6d52adab7f0a6497cd25212d51b07b0cbc509fb, "typehash"
        );
        address fixedAt = address(0xCAFE);
        vm.etch(fixedAt, address(escrow).code); // EIP712 rebuilds the domain for a new address
        JobEscrow.Receipt memory r = JobEscrow.Receipt({
            jobId: keccak256("job-1"),
            shardId: 7,
            modelSha256: keccak256("model"),
            inputDigest: keccak256("input"),
            outputDigest: keccak256("output"),
            worker: 0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A
        });
        assertEq(block.chainid, 31337, "chain id");
        bytes32 digest = JobEscrow(fixedAt).receiptDigest(r);
        assertEq(digest, 0x7ac456a314da45e557fa37df232ac0470b05fb7f140f779df13b6e8896a806ec, "digest");
        assertEq(vm.addr(uint256(0x1111111111111111111111111111111111111111111111111111111111111111)), r.worker, "key");

        bytes memory pySig =
            hex"e491c39d1dc00914d2b933ee1e12b47b6f15e88e528d739a570bec08841be3584b309f2129ff323cc93061952be1aa02bb337c0226c70208e67a247921c4b8301b";
        (bytes32 sr, bytes32 ss) = abi.decode(pySig, (bytes32, bytes32));
        assertEq(ecrecover(digest, uint8(pySig[64]), sr, ss), r.worker, "eth_account signature recovers");
    }

    function test_ReceiptDigest_UsesDomain() public view {
        bytes32 expectedDomain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("shardnet"),
                keccak256("1"),
                block.chainid,
                address(escrow)
            )
        );
        assertEq(escrow.domainSeparator(), expectedDomain, "domain");
        bytes32 structHash = keccak256(
            abi.encode(
                escrow.RECEIPT_TYPEHASH(),
                offending.jobId,
                offending.shardId,
                offending.modelSha256,
                offending.inputDigest,
                offending.outputDigest,
                offending.worker
            )
        );
        assertEq(
            escrow.receiptDigest(offending),
            keccak256(abi.encodePacked("\x19\x01", expectedDomain, structHash)),
            "digest"
        );
    }

    // ─────────────────────────────────────────────────────────────────────────
    // slash: success
    // ─────────────────────────────────────────────────────────────────────────

    function test_Slash_TakesBpsOfStakeForClient() public {
        bytes32 digest = escrow.receiptDigest(offending);
        vm.expectEmit(address(registry));
        emit WorkerRegistry.Slashed(alice, 2 ether, client, 2 ether);
        vm.expectEmit(address(escrow));
        emit JobEscrow.WorkerSlashed(JOB, alice, 2 ether, digest);
        assertEq(_slash(), 2 ether, "returned amount");

        assertEq(registry.stakeOf(alice), 2 ether, "half left");
        assertEq(registry.creditOf(client), 2 ether, "client credited in registry");
        assertEq(registry.stakeOf(bob), 2 ether, "witness untouched");
        assertTrue(escrow.evidenceUsed(digest), "evidence marked");

        uint256 before = client.balance;
        vm.prank(client);
        registry.withdraw();
        assertEq(client.balance - before, 2 ether, "client pulled slashed stake");
    }

    function test_Slash_AfterSettle() public {
        vm.prank(coordinator);
        escrow.settle(JOB, _one(bob), _oneAmt(1 ether), 0, bytes32(0));
        assertEq(_slash(), 2 ether, "slashed after settle");
    }

    function test_Slash_AfterRefund() public {
        vm.warp(T0 + 1 hours + 1);
        vm.prank(client);
        escrow.refund(JOB);
        assertEq(_slash(), 2 ether, "slashed after refund");
    }

    function test_Slash_DuringUnbonding() public {
        vm.prank(alice);
        registry.beginUnbond();
        assertEq(_slash(), 2 ether, "slashed while unbonding");
    }

    function test_Slash_SecondReceiptSlashesAgain() public {
        _slash();
        offending.shardId = 4;
        offendingSig = _signReceipt(PK_ALICE, offending);
        assertEq(_slash(), 1 ether, "half of the remaining half");
        assertTrue(registry.isStaked(alice), "exactly minStake is still staked");
        offending.shardId = 5;
        offendingSig = _signReceipt(PK_ALICE, offending);
        assertEq(_slash(), 0.5 ether, "third slash");
        assertFalse(registry.isStaked(alice), "below minStake");
    }

    function testFuzz_Slash_Amount(uint256 stakeAmt, uint16 bps) public {
        stakeAmt = bound(stakeAmt, MIN_STAKE, 10_000 ether);
        bps = uint16(bound(bps, 1, 10_000));
        vm.prank(deployer);
        WorkerRegistry r = new WorkerRegistry(MIN_STAKE, UNBONDING);
        JobEscrow e = new JobEscrow(r, bps);
        vm.prank(deployer);
        r.setEscrow(address(e));
        vm.deal(carol, stakeAmt);
        vm.prank(carol);
        r.register{value: stakeAmt}(_peerKey(carol));
        vm.deal(bob, MIN_STAKE);
        vm.prank(bob);
        r.register{value: MIN_STAKE}(_peerKey(bob));
        vm.prank(client);
        e.openJob{value: 1}(JOB, coordinator, T0 + 1, 1);

        JobEscrow.Receipt memory off = _receipt(carol, BAD);
        JobEscrow.Receipt memory wit = _receipt(bob, GOOD);
        bytes memory so = _sig(PK_CAROL, e.receiptDigest(off));
        bytes memory sw = _sig(PK_BOB, e.receiptDigest(wit));
        uint256 expected = stakeAmt * bps / 10_000;
        vm.prank(coordinator);
        uint256 got = e.slash(off, so, wit, sw);
        assertEq(got, expected, "amount");
        assertEq(r.stakeOf(carol), stakeAmt - expected, "stake left");
        assertEq(r.creditOf(client), expected, "client credit");
        assertEq(address(r).balance, stakeAmt + MIN_STAKE, "registry balance unchanged");
    }

    // ─────────────────────────────────────────────────────────────────────────
    // slash: reverts
    // ─────────────────────────────────────────────────────────────────────────

    function test_Slash_RevertsUnknownJob() public {
        offending.jobId = keccak256("no such job");
        witness.jobId = offending.jobId;
        _resignAndExpect(abi.encodeWithSelector(JobEscrow.UnknownJob.selector, offending.jobId));
    }

    function test_Slash_RevertsNotCoordinator() public {
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.NotCoordinator.selector, client));
        vm.prank(client);
        escrow.slash(offending, offendingSig, witness, witnessSig);
    }

    function test_Slash_RevertsDifferentJob() public {
        witness.jobId = keccak256("job-2");
        _resignAndExpect(abi.encodeWithSelector(JobEscrow.NotAConflict.selector));
    }

    function test_Slash_RevertsDifferentModel() public {
        witness.modelSha256 = keccak256("other.onnx");
        _resignAndExpect(abi.encodeWithSelector(JobEscrow.NotAConflict.selector));
    }

    function test_Slash_RevertsDifferentInput() public {
        witness.inputDigest = keccak256("rows 64..127");
        _resignAndExpect(abi.encodeWithSelector(JobEscrow.NotAConflict.selector));
    }

    function test_Slash_RevertsSameOutput() public {
        witness.outputDigest = BAD;
        _resignAndExpect(abi.encodeWithSelector(JobEscrow.NotAConflict.selector));
    }

    function test_Slash_RevertsSameWorker() public {
        witness.worker = alice;
        offendingSig = _signReceipt(PK_ALICE, offending);
        witnessSig = _signReceipt(PK_ALICE, witness);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.SameWorker.selector, alice));
        _slash();
    }

    function test_Slash_RevertsEvidenceReused() public {
        _slash();
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.EvidenceAlreadyUsed.selector, escrow.receiptDigest(offending)));
        _slash();
    }

    function test_Slash_RevertsOffendingSignedByOther() public {
        offendingSig = _signReceipt(PK_CAROL, offending);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.InvalidSignature.selector, alice));
        _slash();
    }

    function test_Slash_RevertsWitnessSignedByOther() public {
        witnessSig = _signReceipt(PK_CAROL, witness);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.InvalidSignature.selector, bob));
        _slash();
    }

    function test_Slash_RevertsTamperedReceipt() public {
        offending.outputDigest = keccak256("something else"); // signature was over BAD
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.InvalidSignature.selector, alice));
        _slash();
    }

    function test_Slash_RevertsMalformedSignature() public {
        offendingSig = hex"deadbeef";
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.InvalidSignature.selector, alice));
        _slash();
    }

    function test_Slash_RevertsOffenderNotRegistered() public {
        offending.worker = carol;
        _resignAndExpectOffender(PK_CAROL);
    }

    function _resignAndExpectOffender(uint256 pk) internal {
        offendingSig = _signReceipt(pk, offending);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.WorkerNotRegistered.selector, offending.worker));
        _slash();
    }

    function test_Slash_RevertsWitnessNotRegistered() public {
        witness.worker = carol;
        witnessSig = _signReceipt(PK_CAROL, witness);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.WorkerNotRegistered.selector, carol));
        _slash();
    }

    function test_Slash_RevertsNothingToSlash() public {
        // A 1-wei stake: 50% of it rounds down to zero.
        vm.prank(deployer);
        WorkerRegistry r = new WorkerRegistry(1, UNBONDING);
        JobEscrow e = new JobEscrow(r, SLASH_BPS);
        vm.prank(deployer);
        r.setEscrow(address(e));
        vm.deal(carol, 1);
        vm.deal(bob, 1);
        vm.prank(carol);
        r.register{value: 1}(_peerKey(carol));
        vm.prank(bob);
        r.register{value: 1}(_peerKey(bob));
        vm.prank(client);
        e.openJob{value: 1}(JOB, coordinator, T0 + 1, 1);

        JobEscrow.Receipt memory off = _receipt(carol, BAD);
        JobEscrow.Receipt memory wit = _receipt(bob, GOOD);
        bytes memory so = _sig(PK_CAROL, e.receiptDigest(off));
        bytes memory sw = _sig(PK_BOB, e.receiptDigest(wit));
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.NothingToSlash.selector, carol));
        vm.prank(coordinator);
        e.slash(off, so, wit, sw);
    }
}
