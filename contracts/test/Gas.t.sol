// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {JobEscrow} from "../src/JobEscrow.sol";

/// @notice Gas figures recorded in `.gas-snapshot` (`npm run snapshot`). Workers are
///         registered in setUp, so each test measures only what its name says.
contract GasTest is Fixture {
    uint256 internal constant N = 10;
    address[] internal workers;

    function setUp() public override {
        super.setUp();
        for (uint256 i; i < N; ++i) {
            address w = vm.addr(0x1000 + i);
            _register(w, MIN_STAKE);
            workers.push(w);
        }
    }

    function _openAndSettle(uint256 n) internal {
        _open(JOB, 1 ether, 1 ether);
        address[] memory ws = new address[](n);
        uint256[] memory amts = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            ws[i] = workers[i];
            amts[i] = 0.05 ether;
        }
        vm.prank(coordinator);
        escrow.settle(JOB, ws, amts, 0.01 ether, keccak256("root"));
    }

    function test_Gas_OpenJob() public {
        _open(JOB, 1 ether, 1 ether);
    }

    function test_Gas_Settle_1Worker() public {
        _openAndSettle(1);
    }

    function test_Gas_Settle_3Workers() public {
        _openAndSettle(3);
    }

    function test_Gas_Settle_10Workers() public {
        _openAndSettle(10);
    }

    function test_Gas_Register() public {
        _register(alice, MIN_STAKE);
    }

    function test_Gas_Slash() public {
        _register(alice, 2 ether);
        _register(bob, 2 ether);
        _open(JOB, 1 ether, 1 ether);
        JobEscrow.Receipt memory off = _receipt(alice, keccak256("bad"));
        JobEscrow.Receipt memory wit = _receipt(bob, keccak256("good"));
        bytes memory so = _signReceipt(PK_ALICE, off);
        bytes memory sw = _signReceipt(PK_BOB, wit);
        vm.prank(coordinator);
        escrow.slash(off, so, wit, sw);
    }
}
