using System.Xml.Linq;

namespace ActorTrain.Cli.Tests;

/// <summary>Where `actortrain dashboard` looks for the Aspire dashboard, and the project an installed tool restores to fetch it.</summary>
public sealed class DashboardTests
{
    [Fact]
    public void The_package_is_the_one_for_this_machine_in_the_nuget_folder_layout()
    {
        var (package, executable) = Dashboard.ForThisMachine();
        if (OperatingSystem.IsLinux() && System.Runtime.InteropServices.RuntimeInformation.OSArchitecture == System.Runtime.InteropServices.Architecture.X64)
            Assert.Equal(("Aspire.Dashboard.Sdk.linux-x64", "Aspire.Dashboard"), (package, executable));
        // NuGet's global folder: lower-case id, then version, then the package's files
        Assert.Equal(Path.Combine("/p", package.ToLowerInvariant(), Dashboard.PackageVersion, "tools", executable), Dashboard.PathIn("/p", package, executable));
    }

    [Fact]
    public void The_restore_project_only_downloads_that_exact_version()
    {
        var project = XDocument.Parse(Dashboard.RestoreProject("Aspire.Dashboard.Sdk.linux-x64"));
        var download = Assert.Single(project.Descendants("PackageDownload"));
        Assert.Equal("Aspire.Dashboard.Sdk.linux-x64", download.Attribute("Include")?.Value);
        Assert.Equal($"[{Dashboard.PackageVersion}]", download.Attribute("Version")?.Value);
        Assert.Empty(project.Descendants("PackageReference"));
        // central package management of a folder above must not apply to it
        Assert.Equal("false", project.Descendants("ManagePackageVersionsCentrally").Single().Value);
    }
}
