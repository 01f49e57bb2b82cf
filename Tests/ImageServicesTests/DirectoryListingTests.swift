import SystemSupport
#if canImport(Glibc)
import Glibc
#endif
import Testing
import TestSupport
@testable import ImageServices

@Suite("directory listing reads each record in place")
struct DirectoryListingTests {
    /// A directory record laid out as Linux's `getdents64` packs it (`d_ino`, `d_off`,
    /// `d_reclen`, `d_type`, the name and its NUL, padded to 8 bytes), placed so that it ends
    /// exactly where the next page is inaccessible: reading one byte past the record faults.
    @Test("a record that ends at a PROT_NONE page is read without touching that page")
    func recordAtPageBoundary() throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard let mapping = mmap(nil, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              mapping != MAP_FAILED else { throw SystemCallError(call: "mmap", subject: "two pages", errno: errno) }
        defer { munmap(mapping, 2 * page) }
        try #require(mprotect(mapping + page, page, PROT_NONE) == 0, "no guard page: the test would prove nothing")

        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        let lengthOffset = MemoryLayout<dirent>.offset(of: \dirent.d_reclen)!
        for name in ["a", "abcd", "image-disk.qcow2", String(repeating: "n", count: 255)] {
            let recordLength = (nameOffset + name.utf8.count + 1 + 7) & ~7
            let record = mapping + page - recordLength
            memset(record, 0x7f, recordLength)  // no stray NUL in the padding's place
            record.storeBytes(of: UInt16(recordLength), toByteOffset: lengthOffset, as: UInt16.self)
            for (index, byte) in name.utf8.enumerated() {
                record.storeBytes(of: byte, toByteOffset: nameOffset + index, as: UInt8.self)
            }
            record.storeBytes(of: 0, toByteOffset: nameOffset + name.utf8.count, as: UInt8.self)
            #expect(DirectoryHandle.entryName(UnsafeRawPointer(record)) == name)
        }
    }

    @Test("a directory of a few thousand entries of every name length lists exactly its names")
    func manyNamesOfEveryLength() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        var expected = Set<String>()
        for index in 0..<3000 {
            let length = 1 + index % 255
            let stem = String(index, radix: 36)
            let name = stem + String(repeating: "x", count: max(length - stem.count, 0))
            expected.insert(name)
        }
        for name in expected {
            let fd = open(folder.appending(name), O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
            #expect(fd >= 0)
            close(fd)
        }
        let listed = try DirectoryHandle(path: folder.path).entries()
        #expect(listed.count == expected.count)
        #expect(Set(listed) == expected)
    }
}
